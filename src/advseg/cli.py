"""``advseg <step>``: one command per workflow rule.

Each step lives in ``advseg.commands.<step>`` with ``add_arguments`` and ``run``; it is
imported only when called, so light steps do not pay for importing torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback

STEPS = {
    "download": "prepare a dataset's slices, split and masks",
    "tracking": "create the MLflow store and experiment once, before the fan-out",
    "mlflow-sync": "log the runs recorded while the MLflow store was unreachable",
    "mlflow-ui": "browse the runs: mlflow ui on the configured store",
    "train": "train one architecture x encoder",
    "checkpoint": "export the best weights and a model card with clean validation scores",
    "attack": "attack one model with one method and loss at every eps; clean vs attacked scores",
    "transfer": "replay other models' perturbations on one model",
    "certify": "certify a smoothed model: certified Dice per radius and abstain rate on the held-out slices",
    "aggregate": "build the comparison tables and plots",
    "publish": "write a finished run's claims, size table and figures as a docs page, with its provenance",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="advseg", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback too (also: ADVSEG_DEBUG=1)")
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
    debug = args.debug or os.environ.get("ADVSEG_DEBUG") == "1"
    try:
        if args.step in GPU_STEPS:
            from advseg.devices import claim_gpu

            with claim_gpu():  # before any data is read or CUDA starts: the job sees only its GPU
                args.run(args)
        else:
            args.run(args)
    except Exception as error:  # noqa: BLE001 - every failure ends in one line a user can act on
        if debug or not isinstance(error, EXPECTED_ERRORS):
            traceback.print_exc(file=sys.stderr)
        print(f"advseg {args.step}: error: {explain(error)}", file=sys.stderr)
        return 1
    return 0


GPU_STEPS = {"train", "checkpoint", "attack", "transfer"}  # the rules that declare gpu=1
EXPECTED_ERRORS = (ValueError, OSError)
OS_ADVICE = {
    errno.ENOSPC: "free disk space (or point results_dir elsewhere) and rerun",
    errno.EDQUOT: "free disk space within your quota and rerun",
    errno.EROFS: "results_dir is on a read-only file system: point it at a writable folder",
    errno.EACCES: "make it readable/writable for you, or point results_dir at a folder you own",
    errno.EFBIG: "the file outgrew a size limit (ulimit -f); raise it and rerun",
}


def explain(error: BaseException) -> str:
    """One line: what failed, which file, what to do. Unexpected errors say where the traceback is."""
    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        advice = OS_ADVICE.get(error.errno, "check the path and rerun")
        return f"{where}{error.strerror or error}; {advice}"
    return (f"unexpected {type(error).__name__}: {error} (the traceback is above, in this job's log; "
            "please report it)")


if __name__ == "__main__":
    sys.exit(main())
