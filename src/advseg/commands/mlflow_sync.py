"""advseg mlflow-sync: log the runs jobs recorded while the MLflow store was unreachable.

Safe to run at any time and any number of times: a record is deleted only once it is
logged, a run created from it carries its pending id, and records a running job still
writes are left for the next sync.
"""

from __future__ import annotations

import logging

from advseg.commands import add_tracking_argument

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_tracking_argument(parser)


def run(args) -> None:
    from advseg.tracking import Tracking, pending_records, sync_pending

    tracking = Tracking.load(args.tracking)
    waiting = len(pending_records(tracking))
    if not waiting:
        print(f"nothing to sync: no pending records in {tracking.pending_dir}")
        return
    report = sync_pending(tracking)
    print(f"synced {len(report.synced)} pending record(s) into {tracking.tracking_uri}, experiment "
          f"{tracking.experiment_id}; {len(report.in_use)} still written by a running job; "
          f"{len(report.failed)} failed")
    if report.failed:
        details = "; ".join(f"{key}: {why}" for key, why in report.failed.items())
        raise ValueError(f"{len(report.failed)} pending record(s) in {tracking.pending_dir} could not be logged: "
                         f"{details}")
