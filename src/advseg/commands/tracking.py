"""advseg tracking: create the MLflow store and experiment before any job writes runs."""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--artifact-dir", type=Path, required=True,
                        help="where runs store artifacts, for local stores (sqlite, file)")
    parser.add_argument("--out", type=Path, required=True, help="JSON naming the store and experiment id")


def run(args) -> None:
    from advseg.tracking import init_tracking

    init_tracking(args.tracking_uri, args.experiment, args.artifact_dir, args.out)
