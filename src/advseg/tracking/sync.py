"""Logging pending records into the store, exactly once (``advseg mlflow-sync``).

A run created from a record carries the tag ``advseg.pending_id``, so a second sync finds
it instead of creating another. A record names its parent or its target run by a
``pending-<id>`` while that run was pending too: :func:`resolve` syncs that record first,
so children always point at their parent's real id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from advseg.tracking.experiment import Tracking
from advseg.tracking.pending import (PARENT_TAG, PENDING_PREFIX, PENDING_TAG, now_ms, pending_records, read_record,
                                     record_path, try_lock)
from advseg.tracking.store import Store, StoreUnreachable

log = logging.getLogger(__name__)

LOST = "<lost>"  # a pending id whose record is gone and that no run carries


def resolve(tracking: Tracking, store: Store, run_id: str, done: dict | None = None) -> str | None:
    """The store's id for ``run_id``: itself, or the run a pending record became (syncing it first).

    None while a live job still holds the record; ``LOST`` when neither record nor run exists.
    """
    if not run_id.startswith(PENDING_PREFIX):
        return run_id
    pending_id = run_id.removeprefix(PENDING_PREFIX)
    done = {} if done is None else done
    if pending_id in done:
        return done[pending_id]
    path = record_path(tracking, pending_id)
    if path.exists():
        with try_lock(tracking, pending_id) as locked:
            if not locked:
                return None
            if path.exists():
                return _sync_record(tracking, store, path, done)
    found = find_pending_run(store, pending_id)
    return found if found else LOST


def _sync_record(tracking: Tracking, store: Store, path: Path, done: dict) -> str | None:
    """Log one pending record (its lock held by the caller), then delete it. Safe to repeat."""
    record = read_record(path)
    pending_id = record["pending_id"]
    target = record["run_id"]
    if record["kind"] == "mark_killed":
        real_id = resolve(tracking, store, target, done)
        if real_id is None:
            return None
        if real_id != LOST and store.status(real_id) == "RUNNING":
            store.call(lambda client: client.set_terminated(real_id, "KILLED", record["end_time"]))
        _forget(tracking, pending_id)
        return real_id
    if target:
        real_id = resolve(tracking, store, target, done)
        if real_id is None:
            return None
        if real_id == LOST:
            target = None
            record["tags"]["advseg.lost_run"] = record["run_id"]
    if not target:
        real_id = find_pending_run(store, pending_id)
        if real_id is None:
            tags = {**record["tags"], PENDING_TAG: pending_id}
            parent_id = record["parent_run_id"]
            if parent_id:
                parent = resolve(tracking, store, parent_id, done)
                if parent is None:
                    return None
                tags.update({"advseg.lost_parent": parent_id} if parent == LOST else {PARENT_TAG: parent})
            created = store.call(lambda client: client.create_run(
                tracking.experiment_id, start_time=record["start_time"], tags=tags, run_name=record["run_name"]))
            real_id = created.info.run_id
    store.log_batch(real_id, params=record["params"], metrics=record["metrics"], tags=record["tags"])
    for artifact in record["artifacts"]:
        if Path(artifact["path"]).is_file():
            store.log_artifact(real_id, artifact["path"], artifact["artifact_path"])
        else:
            log.warning("%s: artifact %s is gone; not logged", path, artifact["path"])
    # RUNNING with the lock free: the job that wrote it was killed
    status = "KILLED" if record["status"] == "RUNNING" else record["status"]
    store.call(lambda client: client.set_terminated(real_id, status, record["end_time"] or now_ms()))
    done[pending_id] = real_id
    _forget(tracking, pending_id)
    log.info("%s -> run %s (%s)", path.name, real_id, status)
    return real_id


def _forget(tracking: Tracking, pending_id: str) -> None:
    record_path(tracking, pending_id).unlink(missing_ok=True)
    (tracking.pending_dir / f"{pending_id}.lock").unlink(missing_ok=True)


@dataclass
class SyncReport:
    synced: dict[str, str]      # pending id -> run id
    in_use: list[str]           # records a running job still writes
    failed: dict[str, str]      # pending id -> why


def sync_pending(tracking: Tracking) -> SyncReport:
    """Log every pending record next to the tracking file; raises ValueError if the store is down."""
    store = Store(tracking)
    report = SyncReport({}, [], {})
    done: dict[str, str] = {}
    for path in pending_records(tracking):
        pending_id = path.stem
        if pending_id in done:
            continue
        try:
            real_id = resolve(tracking, store, PENDING_PREFIX + pending_id, done)
        except StoreUnreachable as error:
            left = len(pending_records(tracking))
            raise ValueError(f"cannot reach {tracking.describe()} ({error}); {left} record(s) wait in "
                             f"{tracking.pending_dir}: start the store and run mlflow-sync again") from error
        except ValueError as error:
            report.failed[pending_id] = str(error)
            continue
        if real_id is None:
            report.in_use.append(pending_id)
        elif real_id != LOST:
            report.synced[pending_id] = real_id
    # records synced as a dependency of another are in ``done`` too
    report.synced.update({key: value for key, value in done.items() if value != LOST})
    return report


def find_pending_run(store: Store, pending_id: str) -> str | None:
    from mlflow.entities import ViewType

    runs = store.call(lambda client: client.search_runs(
        [store.tracking.experiment_id], f"tags.`{PENDING_TAG}` = '{pending_id}'",
        run_view_type=ViewType.ALL, max_results=2))
    return runs[0].info.run_id if runs else None
