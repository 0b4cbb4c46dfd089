"""One module per workflow step: ``add_arguments(parser)`` and ``run(args)``."""
