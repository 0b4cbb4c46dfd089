"""The MLflow run a job logs into: online while the store answers, a pending record after that.

Attack runs are children of their model's training run, so the MLflow UI shows each
model with its attacks nested under it. A job that reaches the store and depends on a
pending run (reopens it, or is its child) syncs that record first.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from advseg.tracking.experiment import Tracking
from advseg.tracking.pending import (PARENT_TAG, PENDING_PREFIX, new_record, now_ms, pending_records, read_record,
                                     record_path, try_lock, write_record)
from advseg.tracking.store import Store, StoreUnreachable
from advseg.tracking.sync import LOST, resolve

log = logging.getLogger(__name__)


class JobRun:
    """One job's MLflow run: online while the store answers, a pending record after that."""

    def __init__(self, tracking: Tracking, store: Store):
        self.tracking = tracking
        self._store = store
        self._real_id: str | None = None      # the run in the store, once known
        self._record: dict | None = None      # set once offline
        self._lock: contextlib.ExitStack | None = None

    @property
    def run_id(self) -> str:
        """The store's run id, or ``pending-<id>`` for a run only a pending record knows."""
        if self._real_id is not None:
            return self._real_id
        if self._record is not None:
            target = self._record["run_id"]
            return target if target else PENDING_PREFIX + self._record["pending_id"]
        raise RuntimeError("run not started")

    @property
    def offline(self) -> bool:
        return self._record is not None

    def log_params(self, params: dict[str, Any]) -> None:
        params = {str(key): str(value) for key, value in params.items()}
        self._send(lambda: self._store.log_batch(self._real_id, params=params),
                   lambda record: record["params"].update(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        stamp = now_ms()
        rows = [{"key": str(key), "value": float(value), "step": int(step or 0), "timestamp": stamp}
                for key, value in metrics.items()]
        self._send(lambda: self._store.log_batch(self._real_id, metrics=rows),
                   lambda record: record["metrics"].extend(rows))

    def log_flat_metrics(self, prefix: str, values: dict, step: int | None = None) -> None:
        """Numbers of a (possibly nested) dict as metrics prefix+key[_subkey]; other values skipped."""
        flat = {}
        for key, value in values.items():
            if isinstance(value, dict):
                flat.update({f"{prefix}{key}_{sub}": v for sub, v in value.items() if _is_number(v)})
            elif _is_number(value):
                flat[f"{prefix}{key}"] = value
        if flat:
            self.log_metrics(flat, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        tags = {str(key): str(value) for key, value in tags.items()}
        self._send(lambda: self._store.log_batch(self._real_id, tags=tags),
                   lambda record: record["tags"].update(tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file to log as an MLflow artifact")
        entry = {"path": str(path.resolve()), "artifact_path": artifact_path}
        self._send(lambda: self._store.log_artifact(self._real_id, entry["path"], artifact_path),
                   lambda record: record["artifacts"].append(entry))

    def logged_steps(self, key: str) -> set[int]:
        """Steps already logged for a metric (a resumed job fills only the gaps)."""
        steps = set()
        if self._real_id is not None and not self.offline:
            try:
                history = self._store.call(lambda client: client.get_metric_history(self._real_id, key))
                steps = {metric.step for metric in history}
            except StoreUnreachable as error:
                self._go_offline(str(error))
        if self._record is not None:
            steps |= {row["step"] for row in self._record["metrics"] if row["key"] == key}
        return steps

    # internals ---------------------------------------------------------------------------
    def _send(self, online, offline) -> None:
        if self._record is None:
            try:
                online()
                return
            except StoreUnreachable as error:
                self._go_offline(str(error))
        offline(self._record)
        self._flush()

    def _flush(self) -> None:
        write_record(self.tracking, self._record)

    def _hold(self, pending_id: str) -> bool:
        stack = contextlib.ExitStack()
        if not stack.enter_context(try_lock(self.tracking, pending_id)):
            stack.close()
            return False
        self._lock = stack
        return True

    def _go_offline(self, reason: str, run_name: str | None = None, tags: dict | None = None,
                    parent_run_id: str | None = None, target: str | None = None) -> None:
        """From now on everything goes to a pending record (kept under its lock while the job lives)."""
        if self._record is not None:
            return
        target = target or self._real_id
        if target and target.startswith(PENDING_PREFIX):
            adopted = self._adopt(target.removeprefix(PENDING_PREFIX), tags or {})
            if adopted:
                return
        self._record = new_record(self.tracking, run_name, tags or {}, parent_run_id, target, reason)
        if not self._hold(self._record["pending_id"]):
            raise RuntimeError(f"fresh pending id {self._record['pending_id']} is locked")  # a uuid4 collision
        self._flush()
        log.warning("%s unreachable (%s): logging to %s; run 'advseg mlflow-sync --tracking %s' once it is back",
                    self.tracking.tracking_uri, reason, record_path(self.tracking, self._record["pending_id"]),
                    self.tracking.source)

    def _adopt(self, pending_id: str, tags: dict) -> bool:
        """Reopening a run only a pending record knows: go on writing that record."""
        path = record_path(self.tracking, pending_id)
        if not path.exists() or not self._hold(pending_id):
            return False
        if not path.exists():  # synced while we waited for the lock
            self._lock.close()
            self._lock = None
            return False
        self._record = read_record(path)
        self._record.update(status="RUNNING", end_time=None)
        self._record["tags"].update(tags)
        self._flush()
        log.warning("%s unreachable: going on with pending run %s in %s", self.tracking.tracking_uri,
                    pending_id, path)
        return True

    def _start(self, run_name: str, tags: dict, parent_run_id: str | None, run_id: str | None) -> None:
        tags = {str(key): str(value) for key, value in tags.items()}
        try:
            parent = resolve(self.tracking, self._store, parent_run_id) if parent_run_id else None
            if parent_run_id and parent is None:
                raise StoreUnreachable(f"parent run {parent_run_id} is still being written by a running job")
            if run_id:
                self._real_id = resolve(self.tracking, self._store, run_id)
                if self._real_id is None:
                    raise StoreUnreachable(f"run {run_id} is still being written by a running job")
                if self._real_id == LOST:
                    log.warning("run %s was never logged and its pending record is gone: starting a new run", run_id)
                    self._real_id = None
                    tags = {**tags, "advseg.lost_run": run_id}
                else:
                    if parent:
                        tags = {**tags, PARENT_TAG: parent}
                    self._store.call(lambda client: client.update_run(self._real_id, status="RUNNING"))
                    self.set_tags(tags)
                    return
            if parent and parent != LOST:
                tags = {**tags, PARENT_TAG: parent}
            elif parent == LOST:
                tags = {**tags, "advseg.lost_parent": parent_run_id}
            experiment = self.tracking.experiment_id
            created = self._store.call(lambda client: client.create_run(experiment, tags=tags, run_name=run_name))
            self._real_id = created.info.run_id
        except StoreUnreachable as error:
            # a reopened run stays the one the job asked for; a new one gets a pending id
            self._go_offline(str(error), run_name=run_name, tags=tags, parent_run_id=parent_run_id,
                             target=self._real_id or run_id)
        else:
            waiting = len(pending_records(self.tracking)) if self.tracking.source else 0
            if waiting:
                log.warning("%d MLflow record(s) wait in %s: run 'advseg mlflow-sync --tracking %s'", waiting,
                            self.tracking.pending_dir, self.tracking.source)

    def _end(self, status: str) -> None:
        if self._record is None:
            try:
                self._store.call(lambda client: client.set_terminated(self._real_id, status))
                return
            except StoreUnreachable as error:
                self._go_offline(str(error))
        self._record.update(status=status, end_time=now_ms())
        self._flush()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or \
        (hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype.kind in "iuf")


@contextlib.contextmanager
def job_run(tracking: Tracking, run_name: str, tags: dict[str, Any], parent_run_id: str | None = None,
            run_id: str | None = None) -> Iterator[JobRun]:
    """Start a run (or reopen ``run_id``) in the workflow's experiment; never fails for a store that is down.

    The run ends FINISHED, FAILED when the body raises, KILLED on KeyboardInterrupt/SystemExit.
    MLflow errors that retrying cannot fix (a stale tracking file, a param changed on a run)
    become a ValueError naming the store and what to do.
    """
    run = JobRun(tracking, Store(tracking))
    run._start(run_name, tags, parent_run_id, run_id)
    status = "FINISHED"
    try:
        yield run
    except Exception:
        status = "FAILED"
        raise
    except BaseException:
        status = "KILLED"
        raise
    finally:
        try:
            run._end(status)
        except Exception as error:
            if status == "FINISHED":
                raise
            log.warning("could not mark run %s %s: %s", run.run_id, status, error)
        finally:
            run._release()
