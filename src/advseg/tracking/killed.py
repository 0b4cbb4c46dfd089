"""Marking the run of a killed job KILLED, so that no run stays RUNNING for ever."""

from __future__ import annotations

from advseg.tracking.experiment import Tracking
from advseg.tracking.pending import PENDING_PREFIX, new_record, now_ms, read_record, record_path, try_lock, write_record
from advseg.tracking.store import Store, StoreUnreachable
from advseg.tracking.sync import LOST, resolve


def mark_killed(tracking: Tracking, run_id: str) -> bool:
    """Mark a run left RUNNING by a killed job as KILLED; True if it was RUNNING.

    Works for a ``pending-<id>`` run and when the store is down (recorded for the next sync).
    """
    store = Store(tracking)
    if run_id.startswith(PENDING_PREFIX):
        pending_id = run_id.removeprefix(PENDING_PREFIX)
        path = record_path(tracking, pending_id)
        if path.exists():
            with try_lock(tracking, pending_id) as locked:
                if not locked:
                    return False  # a live job still writes it
                if path.exists():
                    record = read_record(path)
                    if record["status"] != "RUNNING":
                        return False
                    record.update(status="KILLED", end_time=now_ms())
                    write_record(tracking, record)
                    return True
    try:
        real_id = resolve(tracking, store, run_id)
        if real_id is None or real_id == LOST:
            return False
        if store.status(real_id) != "RUNNING":
            return False
        store.call(lambda client: client.set_terminated(real_id, "KILLED"))
        return True
    except StoreUnreachable as error:
        record = new_record(tracking, None, {}, None, run_id, str(error), kind="mark_killed")
        record.update(status="KILLED", end_time=now_ms())
        write_record(tracking, record)
        return True
