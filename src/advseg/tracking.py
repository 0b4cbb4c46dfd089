"""MLflow runs for every job, in one experiment created before the fan-out.

Parallel first writes to a fresh SQLite store race on its schema migration, so the
workflow's ``tracking`` rule creates the store and the experiment once and writes
their ids to a small JSON file; every later job reads that file and only adds runs.
Attack runs are children of their model's training run, so the MLflow UI shows each
model with its attacks nested under it.

A job must finish even when its store cannot be reached (an MLflow server that is
down, a SQLite file that stays locked): :func:`job_run` then records everything the
job could not log in a *pending record*, ``<tracking dir>/pending/<id>.json``, and
hands out ``pending-<id>`` as the run id. :func:`sync_pending` (``advseg
mlflow-sync``) logs those records later, exactly once: a run it creates carries the
tag ``advseg.pending_id``, so a second sync finds it instead of creating another.
A job that reaches the store and depends on a pending run (reopens it, or is its
child) syncs that record first, so children always point at their parent's real id.

mlflow is imported inside functions: importing it costs every job seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
PENDING_TAG = "advseg.pending_id"
PENDING_PREFIX = "pending-"
PENDING_FORMAT = 1
# A lock that outlasts SQLite's own 20 s busy timeout this many times gives up (then: pending).
LOCKED_ATTEMPTS = 5
# Bounded HTTP retries: MLflow's defaults (7 retries, factor 2, 120 s timeout) keep a job
# waiting minutes per call on a server that is down. A user's own settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_LOCKED_MARKERS = ("database is locked", "database is busy", "deadlock")
_UNREACHABLE_MARKERS = ("max retries exceeded", "connection refused", "failed to establish",
                        "connectionerror", "connection aborted", "remotedisconnected", "timed out",
                        "timeout", "unable to open database file", "disk i/o error", "name or service not known",
                        "temporary failure in name resolution", "bad gateway", "service unavailable")
# stores found unreachable by this process: later runs go straight to a pending record
_unreachable: set[str] = set()


class StoreUnreachable(Exception):
    """The tracking store did not answer (after bounded retries); what is left goes pending."""


@dataclass(frozen=True)
class Tracking:
    tracking_uri: str
    experiment_id: str
    experiment_name: str
    # the tracking file this was read from: pending records live next to it
    source: Path | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: Path, check: bool = True) -> "Tracking":
        """Read a tracking file; with ``check``, fail now if its store lost the experiment."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            tracking = cls(str(data["tracking_uri"]), str(data["experiment_id"]), str(data["experiment_name"]),
                           source=path)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}: not a tracking file written by 'advseg tracking' ({error})") from error
        if check:
            tracking.check_experiment()
        return tracking

    @property
    def pending_dir(self) -> Path:
        if self.source is None:
            raise ValueError(f"MLflow store {self.tracking_uri} is unreachable and this Tracking was not read from "
                             "a tracking file, so there is nowhere to keep what could not be logged")
        return Path(self.source).parent / "pending"

    def describe(self) -> str:
        where = f" (named by {self.source})" if self.source else ""
        return f"MLflow store {self.tracking_uri}{where}"

    def check_experiment(self) -> None:
        """Fail with one clear line when the store no longer holds the experiment.

        Cheap on purpose (no mlflow import): sqlite3 for a SQLite store, one REST call for a
        server. A store that cannot be read now is left to the job, which then goes pending.
        """
        if self.tracking_uri.startswith("sqlite:///"):
            stage = _sqlite_experiment_stage(self)
        elif self.tracking_uri.startswith(("http://", "https://")):
            stage = _server_experiment_stage(self)
        else:
            return
        if stage == "missing":
            raise ValueError(self._stale_message())
        if stage == "deleted":
            raise ValueError(
                f"{self.describe()}: experiment {self.experiment_name!r} (id {self.experiment_id}) is deleted; "
                f"restore it (mlflow experiments restore --experiment-id {self.experiment_id}, with "
                f"MLFLOW_TRACKING_URI={self.tracking_uri}) or delete {self.source or 'the tracking file'} and rerun "
                "the workflow to create a new one")

    def _stale_message(self) -> str:
        target = self.source or "the tracking file"
        return (f"{target}: experiment {self.experiment_name!r} (id {self.experiment_id}) does not exist in "
                f"{self.tracking_uri} (the store was deleted or replaced after 'advseg tracking' wrote this file); "
                f"delete {target} and rerun the workflow: its 'tracking' rule creates the experiment again "
                "(and the jobs that log into it rerun)")


def _sqlite_path(tracking_uri: str) -> Path:
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


def _sqlite_experiment_stage(tracking: Tracking) -> str | None:
    path = _sqlite_path(tracking.tracking_uri)
    if not path.exists():
        return "missing"  # and no MlflowClient may touch it: it would create an empty store
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=20)) as db:
            row = db.execute("SELECT lifecycle_stage FROM experiments WHERE experiment_id = ?",
                             (int(tracking.experiment_id),)).fetchone()
    except (sqlite3.Error, ValueError) as error:
        if "no such table" in str(error):
            return "missing"
        log.warning("could not check %s for experiment %s: %s", path, tracking.experiment_id, error)
        return None
    return "missing" if row is None else ("deleted" if row[0] == "deleted" else "active")


def _server_experiment_stage(tracking: Tracking) -> str | None:
    url = (f"{tracking.tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/get"
           f"?experiment_id={urllib.request.quote(tracking.experiment_id)}")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            stage = json.load(response)["experiment"].get("lifecycle_stage", "active")
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")
        return "missing" if error.code == 404 or "RESOURCE_DOES_NOT_EXIST" in body else None
    except (OSError, ValueError, KeyError):
        return None  # down or not answering: the job records its run as pending
    return "deleted" if stage == "deleted" else "active"


def init_tracking(tracking_uri: str, experiment: str, artifact_dir: Path, out: Path) -> Tracking:
    """Create (or find) the experiment and record where it is."""
    from advseg.jobs import write_json

    store = _Store(Tracking(tracking_uri, "", experiment, source=Path(out)))
    try:
        found = store.call(lambda client: client.get_experiment_by_name(experiment))
        if found is None:
            artifact_location = None if tracking_uri.startswith(("http://", "https://", "databricks")) \
                else Path(artifact_dir).resolve().as_uri()
            experiment_id = store.call(lambda client: client.create_experiment(experiment,
                                                                               artifact_location=artifact_location))
            log.info("created experiment %r (%s) in %s", experiment, experiment_id, tracking_uri)
        elif found.lifecycle_stage == "deleted":
            raise ValueError(f"mlflow.experiment: {experiment!r} is deleted in {tracking_uri}; restore it (mlflow "
                             f"experiments restore --experiment-id {found.experiment_id}) or choose another name")
        else:
            experiment_id = found.experiment_id
            log.info("using experiment %r (%s) in %s", experiment, experiment_id, tracking_uri)
    except StoreUnreachable as error:
        raise ValueError(f"mlflow.tracking_uri: cannot reach {tracking_uri} to create the experiment ({error}); "
                         "start the server (make mlflow-server) or fix the address, then rerun") from error
    tracking = Tracking(tracking_uri, str(experiment_id), experiment, source=Path(out))
    write_json(Path(out), {"tracking_uri": tracking_uri, "experiment_id": str(experiment_id),
                           "experiment_name": experiment})
    return tracking


# --- talking to the store ---------------------------------------------------------------

def _error_kind(error: BaseException) -> str | None:
    text = f"{type(error).__name__} {error}".lower()
    if any(marker in text for marker in _LOCKED_MARKERS):
        return "locked"
    if any(marker in text for marker in _UNREACHABLE_MARKERS):
        return "unreachable"
    return None


_clients: dict = {}


class _Store:
    """An MlflowClient whose calls retry transient failures and fail in one clean line."""

    def __init__(self, tracking: Tracking):
        self.tracking = tracking
        self._client = None

    def client(self):
        if self.tracking.tracking_uri in _unreachable:
            raise StoreUnreachable(f"{self.tracking.tracking_uri} did not answer earlier in this job")
        if self._client is None:
            if self.tracking.tracking_uri.startswith(("http://", "https://")):
                for name, value in HTTP_DEFAULTS.items():
                    os.environ.setdefault(name, value)
            elif (self.tracking.tracking_uri.startswith("sqlite:///") and self.tracking.experiment_id
                  and not _sqlite_path(self.tracking.tracking_uri).exists()):
                raise ValueError(self.tracking._stale_message())
            uri = self.tracking.tracking_uri
            if uri not in _clients:  # a client costs about 0.5 s to make: one per store and process
                from mlflow import MlflowClient

                _clients[uri] = self._retry(lambda: MlflowClient(tracking_uri=uri))
            self._client = _clients[uri]
        return self._client

    def call(self, action):
        """``action(client)`` with retries; StoreUnreachable or ValueError on failure."""
        client = self.client()
        return self._retry(lambda: action(client))

    def _retry(self, action):
        from mlflow.exceptions import MlflowException

        delay = 0.5
        for attempt in range(LOCKED_ATTEMPTS):
            try:
                return action()
            except (MlflowException, OSError) as error:
                kind = _error_kind(error)
                if kind == "locked" and attempt + 1 < LOCKED_ATTEMPTS:
                    log.warning("%s is busy (%s); retrying in %.1fs", self.tracking.tracking_uri,
                                _first_line(error), delay)
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 8.0)
                    continue
                if kind is not None:
                    _unreachable.add(self.tracking.tracking_uri)
                    raise StoreUnreachable(_first_line(error)) from error
                if isinstance(error, FileNotFoundError):
                    raise
                raise self._clean(error) from error
        raise AssertionError("unreachable")  # the loop returns or raises

    def _clean(self, error: Exception) -> ValueError:
        message = _first_line(error)
        code = getattr(error, "error_code", "")
        if code == "RESOURCE_DOES_NOT_EXIST" and "experiment" in message.lower():
            return ValueError(self.tracking._stale_message())
        if code == "RESOURCE_DOES_NOT_EXIST":
            return ValueError(f"{self.tracking.describe()}: {message}; the run was logged to a store that has since "
                              "been deleted or replaced: delete the job's outputs and rerun it")
        return ValueError(f"{self.tracking.describe()}: {message}; check mlflow.tracking_uri and that this is the "
                          f"store 'advseg tracking' set up")

    # run-level helpers --------------------------------------------------------------------
    def find_pending_run(self, pending_id: str) -> str | None:
        from mlflow.entities import ViewType

        runs = self.call(lambda client: client.search_runs(
            [self.tracking.experiment_id], f"tags.`{PENDING_TAG}` = '{pending_id}'",
            run_view_type=ViewType.ALL, max_results=2))
        return runs[0].info.run_id if runs else None

    def log_batch(self, run_id: str, params: dict | None = None, metrics: list[dict] | None = None,
                  tags: dict | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        params = [Param(key, value) for key, value in (params or {}).items()]
        metrics = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in (metrics or [])]
        tags = [RunTag(key, value) for key, value in (tags or {}).items()]
        for start in range(0, max(len(params), len(tags), 1), 100):
            if params[start:start + 100] or tags[start:start + 100]:
                self.call(lambda client: client.log_batch(run_id, params=params[start:start + 100],
                                                          tags=tags[start:start + 100]))
        for start in range(0, len(metrics), 1000):
            self.call(lambda client: client.log_batch(run_id, metrics=metrics[start:start + 1000]))

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        self.call(lambda client: client.log_artifact(run_id, path, artifact_path))

    def status(self, run_id: str) -> str:
        return self.call(lambda client: client.get_run(run_id)).info.status


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- pending records ----------------------------------------------------------------------

def _record_path(tracking: Tracking, pending_id: str) -> Path:
    return tracking.pending_dir / f"{pending_id}.json"


def _write_record(tracking: Tracking, record: dict) -> None:
    """Atomic: a reader (a sync, a resumed job) sees the old record or the new one."""
    directory = tracking.pending_dir
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".", suffix=".tmp", delete=False) as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")
    os.replace(handle.name, _record_path(tracking, record["pending_id"]))


def _read_record(path: Path) -> dict:
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
    return sorted(directory.glob("*.json"), key=lambda path: (path.stat().st_mtime, path.name))


@contextlib.contextmanager
def _try_lock(tracking: Tracking, pending_id: str) -> Iterator[bool]:
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


def _new_record(tracking: Tracking, run_name: str | None, tags: dict, parent_run_id: str | None,
                run_id: str | None, reason: str, kind: str = "run") -> dict:
    return {"format": PENDING_FORMAT, "pending_id": uuid.uuid4().hex, "kind": kind,
            "tracking_uri": tracking.tracking_uri, "experiment_id": tracking.experiment_id,
            "run_id": run_id, "run_name": run_name, "parent_run_id": parent_run_id,
            "status": "RUNNING", "start_time": _now_ms(), "end_time": None,
            "tags": dict(tags), "params": {}, "metrics": [], "artifacts": [], "reason": reason}


# --- the run a job logs into --------------------------------------------------------------

class JobRun:
    """One job's MLflow run: online while the store answers, a pending record after that."""

    def __init__(self, tracking: Tracking, store: _Store):
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
        stamp = _now_ms()
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
        _write_record(self.tracking, self._record)

    def _hold(self, pending_id: str) -> bool:
        stack = contextlib.ExitStack()
        if not stack.enter_context(_try_lock(self.tracking, pending_id)):
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
        self._record = _new_record(self.tracking, run_name, tags or {}, parent_run_id, target, reason)
        if not self._hold(self._record["pending_id"]):
            raise RuntimeError(f"fresh pending id {self._record['pending_id']} is locked")  # a uuid4 collision
        self._flush()
        log.warning("%s unreachable (%s): logging to %s; run 'advseg mlflow-sync --tracking %s' once it is back",
                    self.tracking.tracking_uri, reason, _record_path(self.tracking, self._record["pending_id"]),
                    self.tracking.source)

    def _adopt(self, pending_id: str, tags: dict) -> bool:
        """Reopening a run only a pending record knows: go on writing that record."""
        path = _record_path(self.tracking, pending_id)
        if not path.exists() or not self._hold(pending_id):
            return False
        if not path.exists():  # synced while we waited for the lock
            self._lock.close()
            self._lock = None
            return False
        self._record = _read_record(path)
        self._record.update(status="RUNNING", end_time=None)
        self._record["tags"].update(tags)
        self._flush()
        log.warning("%s unreachable: going on with pending run %s in %s", self.tracking.tracking_uri,
                    pending_id, path)
        return True

    def _start(self, run_name: str, tags: dict, parent_run_id: str | None, run_id: str | None) -> None:
        tags = {str(key): str(value) for key, value in tags.items()}
        try:
            parent = _resolve(self.tracking, self._store, parent_run_id) if parent_run_id else None
            if parent_run_id and parent is None:
                raise StoreUnreachable(f"parent run {parent_run_id} is still being written by a running job")
            if run_id:
                self._real_id = _resolve(self.tracking, self._store, run_id)
                if self._real_id is None:
                    raise StoreUnreachable(f"run {run_id} is still being written by a running job")
                if self._real_id == _LOST:
                    log.warning("run %s was never logged and its pending record is gone: starting a new run", run_id)
                    self._real_id = None
                    tags = {**tags, "advseg.lost_run": run_id}
                else:
                    if parent:
                        tags = {**tags, PARENT_TAG: parent}
                    self._store.call(lambda client: client.update_run(self._real_id, status="RUNNING"))
                    self.set_tags(tags)
                    return
            if parent and parent != _LOST:
                tags = {**tags, PARENT_TAG: parent}
            elif parent == _LOST:
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
        self._record.update(status=status, end_time=_now_ms())
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
    run = JobRun(tracking, _Store(tracking))
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


def mark_killed(tracking: Tracking, run_id: str) -> bool:
    """Mark a run left RUNNING by a killed job as KILLED; True if it was RUNNING.

    Works for a ``pending-<id>`` run and when the store is down (recorded for the next sync).
    """
    store = _Store(tracking)
    if run_id.startswith(PENDING_PREFIX):
        pending_id = run_id.removeprefix(PENDING_PREFIX)
        path = _record_path(tracking, pending_id)
        if path.exists():
            with _try_lock(tracking, pending_id) as locked:
                if not locked:
                    return False  # a live job still writes it
                if path.exists():
                    record = _read_record(path)
                    if record["status"] != "RUNNING":
                        return False
                    record.update(status="KILLED", end_time=_now_ms())
                    _write_record(tracking, record)
                    return True
    try:
        real_id = _resolve(tracking, store, run_id)
        if real_id is None or real_id == _LOST:
            return False
        if store.status(real_id) != "RUNNING":
            return False
        store.call(lambda client: client.set_terminated(real_id, "KILLED"))
        return True
    except StoreUnreachable as error:
        record = _new_record(tracking, None, {}, None, run_id, str(error), kind="mark_killed")
        record.update(status="KILLED", end_time=_now_ms())
        _write_record(tracking, record)
        return True


# --- sync ---------------------------------------------------------------------------------

_LOST = "<lost>"  # a pending id whose record is gone and that no run carries


def _resolve(tracking: Tracking, store: _Store, run_id: str, done: dict | None = None) -> str | None:
    """The store's id for ``run_id``: itself, or the run a pending record became (syncing it first).

    None while a live job still holds the record; ``_LOST`` when neither record nor run exists.
    """
    if not run_id.startswith(PENDING_PREFIX):
        return run_id
    pending_id = run_id.removeprefix(PENDING_PREFIX)
    done = {} if done is None else done
    if pending_id in done:
        return done[pending_id]
    path = _record_path(tracking, pending_id)
    if path.exists():
        with _try_lock(tracking, pending_id) as locked:
            if not locked:
                return None
            if path.exists():
                return _sync_record(tracking, store, path, done)
    found = store.find_pending_run(pending_id)
    return found if found else _LOST


def _sync_record(tracking: Tracking, store: _Store, path: Path, done: dict) -> str | None:
    """Log one pending record (its lock held by the caller), then delete it. Safe to repeat."""
    record = _read_record(path)
    pending_id = record["pending_id"]
    target = record["run_id"]
    if record["kind"] == "mark_killed":
        real_id = _resolve(tracking, store, target, done)
        if real_id is None:
            return None
        if real_id != _LOST and store.status(real_id) == "RUNNING":
            store.call(lambda client: client.set_terminated(real_id, "KILLED", record["end_time"]))
        _forget(tracking, pending_id)
        return real_id
    if target:
        real_id = _resolve(tracking, store, target, done)
        if real_id is None:
            return None
        if real_id == _LOST:
            target = None
            record["tags"]["advseg.lost_run"] = record["run_id"]
    if not target:
        real_id = store.find_pending_run(pending_id)
        if real_id is None:
            tags = {**record["tags"], PENDING_TAG: pending_id}
            parent_id = record["parent_run_id"]
            if parent_id:
                parent = _resolve(tracking, store, parent_id, done)
                if parent is None:
                    return None
                tags.update({"advseg.lost_parent": parent_id} if parent == _LOST else {PARENT_TAG: parent})
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
    store.call(lambda client: client.set_terminated(real_id, status, record["end_time"] or _now_ms()))
    done[pending_id] = real_id
    _forget(tracking, pending_id)
    log.info("%s -> run %s (%s)", path.name, real_id, status)
    return real_id


def _forget(tracking: Tracking, pending_id: str) -> None:
    _record_path(tracking, pending_id).unlink(missing_ok=True)
    (tracking.pending_dir / f"{pending_id}.lock").unlink(missing_ok=True)


@dataclass
class SyncReport:
    synced: dict[str, str]      # pending id -> run id
    in_use: list[str]           # records a running job still writes
    failed: dict[str, str]      # pending id -> why


def sync_pending(tracking: Tracking) -> SyncReport:
    """Log every pending record next to the tracking file; raises ValueError if the store is down."""
    store = _Store(tracking)
    report = SyncReport({}, [], {})
    done: dict[str, str] = {}
    for path in pending_records(tracking):
        pending_id = path.stem
        if pending_id in done:
            continue
        try:
            real_id = _resolve(tracking, store, PENDING_PREFIX + pending_id, done)
        except StoreUnreachable as error:
            left = len(pending_records(tracking))
            raise ValueError(f"cannot reach {tracking.describe()} ({error}); {left} record(s) wait in "
                             f"{tracking.pending_dir}: start the store and run mlflow-sync again") from error
        except ValueError as error:
            report.failed[pending_id] = str(error)
            continue
        if real_id is None:
            report.in_use.append(pending_id)
        elif real_id != _LOST:
            report.synced[pending_id] = real_id
    # records synced as a dependency of another are in ``done`` too
    report.synced.update({key: value for key, value in done.items() if value != _LOST})
    return report


def resolve_run_id(tracking: Tracking, run_id: str) -> str | None:
    """The store's id of a run named in a result file (a ``pending-`` id once synced); None if unknown."""
    real = _resolve(tracking, _Store(tracking), run_id)
    return None if real in (None, _LOST) else real


# --- make mlflow-ui -----------------------------------------------------------------------

def ui_command(config: str | None = None, port: int = 5000) -> str:
    """The shell command `make mlflow-ui` runs for the configured store ('' for a server).

    Reads config.yaml, then ``config`` on top (as ``snakemake --configfile`` does), and
    says on stderr where the runs are.
    """
    import sys

    import yaml

    merged: dict = {}
    for path in ["config.yaml"] + ([config] if config and config != "config.yaml" else []):
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"{path}: cannot read the config ({error})") from error
        merged["results_dir"] = data.get("results_dir", merged.get("results_dir", "results"))
        merged["mlflow"] = {**merged.get("mlflow", {}), **(data.get("mlflow") or {})}
    uri = merged["mlflow"].get("tracking_uri") or f"sqlite:///{merged['results_dir']}/mlflow.db"  # null: the default
    tracking_file = Path(merged["results_dir"]) / "mlflow" / "tracking.json"
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"
    if tracking_file.exists():
        experiment_id = json.loads(tracking_file.read_text()).get("experiment_id", "")
        print(f"Runs: {base}/#/experiments/{experiment_id}/runs  (or the UI's 'Model training' view)",
              file=sys.stderr)
    else:
        print(f"no runs yet ({tracking_file} is missing): run the workflow first", file=sys.stderr)
    if uri.startswith(("http://", "https://")):
        print(f"mlflow.tracking_uri is the server {uri}: it serves the UI itself "
              "(start it with 'make mlflow-server' if it is not running)", file=sys.stderr)
        return ""
    if not uri.startswith("sqlite:///"):
        raise ValueError(f"mlflow.tracking_uri: {uri!r} is neither sqlite:/// nor http(s)://")
    if not _sqlite_path(uri).exists():
        raise ValueError(f"mlflow.tracking_uri: {_sqlite_path(uri)} does not exist yet: run the workflow first")
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {port}"


def ui_main(config: str | None = None, port: int = 5000) -> None:
    """Entry for `make mlflow-ui`: the command on stdout, or one line on stderr and exit 1."""
    import sys

    try:
        print(ui_command(config, port))
    except ValueError as error:
        print(f"make mlflow-ui: {error}", file=sys.stderr)
        raise SystemExit(1) from None
