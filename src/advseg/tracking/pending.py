"""Pending records: what a job could not log while its store was down, kept beside the tracking file.

A record is ``<tracking dir>/pending/<id>.json``, written whole on every change; the job
that writes it holds ``<id>.lock``, so a sync (:mod:`advseg.tracking.sync`) can tell a
live job's record from one a killed job left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
import uuid
from pathlib import Path
from typing import Iterator

from advseg.jobs import atomic_path
from advseg.tracking.experiment import Tracking

PARENT_TAG = "mlflow.parentRunId"
PENDING_TAG = "advseg.pending_id"
PENDING_PREFIX = "pending-"
PENDING_FORMAT = 1


def now_ms() -> int:
    return int(time.time() * 1000)


def record_path(tracking: Tracking, pending_id: str) -> Path:
    return tracking.pending_dir / f"{pending_id}.json"


def write_record(tracking: Tracking, record: dict) -> None:
    """Atomic: a reader (a sync, a resumed job) sees the old record or the new one."""
    with atomic_path(record_path(tracking, record["pending_id"])) as temporary:
        temporary.write_text(json.dumps(record, indent=1) + "\n")


def read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
        if record.get("format") != PENDING_FORMAT or "pending_id" not in record:
            raise ValueError(f"format {record.get('format')!r}, expected {PENDING_FORMAT}")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{path}: not a pending MLflow record ({error}); move it away and run mlflow-sync again") \
            from error
    return record


def pending_records(tracking: Tracking) -> list[Path]:
    """The pending records next to a tracking file, oldest first."""
    directory = tracking.pending_dir
    if not directory.is_dir():
        return []
    return sorted(directory.glob("[!.]*.json"), key=lambda path: (path.stat().st_mtime, path.name))


@contextlib.contextmanager
def try_lock(tracking: Tracking, pending_id: str) -> Iterator[bool]:
    """Hold ``<id>.lock`` if no other process does (a live job writing it, another sync)."""
    tracking.pending_dir.mkdir(parents=True, exist_ok=True)
    handle = open(tracking.pending_dir / f"{pending_id}.lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()


def new_record(tracking: Tracking, run_name: str | None, tags: dict, parent_run_id: str | None,
               run_id: str | None, reason: str, kind: str = "run") -> dict:
    return {"format": PENDING_FORMAT, "pending_id": uuid.uuid4().hex, "kind": kind,
            "tracking_uri": tracking.tracking_uri, "experiment_id": tracking.experiment_id,
            "run_id": run_id, "run_name": run_name, "parent_run_id": parent_run_id,
            "status": "RUNNING", "start_time": now_ms(), "end_time": None,
            "tags": dict(tags), "params": {}, "metrics": [], "artifacts": [], "reason": reason}
