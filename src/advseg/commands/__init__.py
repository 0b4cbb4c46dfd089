"""One module per workflow step: ``add_arguments(parser)`` and ``run(args)``.

The options several steps share are declared once here.
"""

from __future__ import annotations

from pathlib import Path

from advseg import settings


def add_data_arguments(parser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder of 'advseg download'")
    parser.add_argument("--fold", type=int, required=True, help="the held-out fold whose slices are scored")


def add_tracking_argument(parser) -> None:
    parser.add_argument("--tracking", type=Path, required=True, help="file written by 'advseg tracking'")


def add_model_arguments(parser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="checkpoint (.safetensors) of 'advseg checkpoint'")
    parser.add_argument("--card", type=Path, required=True, help="model card (.json) of 'advseg checkpoint'")


def add_compute_arguments(parser, batch_size: bool = True) -> None:
    if batch_size:
        parser.add_argument("--batch-size", type=int, default=settings.default("attack.batch_size"),
                            help="slices per forward pass (default: attack.batch_size's)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")


def add_in_channels_argument(parser, help: str) -> None:
    parser.add_argument("--in-channels", type=int, default=settings.default("models.in_channels"), help=help)


def add_defense_arguments(parser) -> None:
    parser.add_argument("--defense", default="none", help="the model's defense (one of the config's defenses)")
    parser.add_argument("--defense-settings", default="{}",
                        help="the config's defense.<name> section as JSON; what it leaves out comes from the schema")
    parser.add_argument("--twin", default=None, help="the undefended model a defended one is judged against")


def defense_settings(args) -> dict:
    """``--defense`` and ``--defense-settings`` checked, the settings filled in from the schema."""
    from advseg.defenses.defended import checked_settings

    return checked_settings(args.defense, args.defense_settings)


def add_scoring_arguments(parser) -> None:
    """What every step that scores a checkpoint on the held-out fold takes: model, data, tracking, compute."""
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_tracking_argument(parser)
    add_compute_arguments(parser)
