"""``advseg <step>``: one command per workflow rule.

Each step lives in ``advseg.commands.<step>`` with ``add_arguments`` and ``run``; it is
imported only when called, so light steps do not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

STEPS = {
    "download": "prepare a dataset's slices, split and masks",
    "tracking": "create the MLflow store and experiment once, before the fan-out",
    "mlflow-sync": "log the runs recorded while the MLflow store was unreachable",
    "train": "train one architecture x encoder",
    "checkpoint": "export the best weights and a model card with clean validation scores",
    "attack": "attack one model with one method and loss at every eps; clean vs attacked scores",
    "transfer": "replay other models' perturbations on one model",
    "example-grid": "draw one model's example slice under attack",
    "aggregate": "build the comparison tables and plots",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="advseg", description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for step, summary in STEPS.items():
        sub = steps.add_parser(step, help=summary, description=summary)
        if step == chosen:
            module = importlib.import_module(f"advseg.commands.{step.replace('-', '_')}")
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)

    from advseg.jobs import setup_logging

    setup_logging()
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"advseg {args.step}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
