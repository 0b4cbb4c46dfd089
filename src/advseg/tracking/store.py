"""An MlflowClient whose calls retry what is transient and fail in one clean line.

A locked SQLite store is retried with backoff; a store that does not answer raises
:class:`StoreUnreachable` (and is not asked again by this process), upon which a job
goes on logging into a pending record (:mod:`advseg.tracking.pending`). Any other
MLflow error becomes a ValueError that names the store and what to do.
"""

from __future__ import annotations

import logging
import os
import random
import time

from advseg.tracking.experiment import Tracking, sqlite_path

log = logging.getLogger(__name__)

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


def _error_kind(error: BaseException) -> str | None:
    text = f"{type(error).__name__} {error}".lower()
    if any(marker in text for marker in _LOCKED_MARKERS):
        return "locked"
    if any(marker in text for marker in _UNREACHABLE_MARKERS):
        return "unreachable"
    return None


_clients: dict = {}


class Store:
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
                  and not sqlite_path(self.tracking.tracking_uri).exists()):
                raise ValueError(self.tracking.stale_message())
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
                                first_line(error), delay)
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 8.0)
                    continue
                if kind is not None:
                    _unreachable.add(self.tracking.tracking_uri)
                    raise StoreUnreachable(first_line(error)) from error
                if isinstance(error, FileNotFoundError):
                    raise
                raise self._clean(error) from error
        raise AssertionError("unreachable")  # the loop returns or raises

    def _clean(self, error: Exception) -> ValueError:
        message = first_line(error)
        code = getattr(error, "error_code", "")
        if code == "RESOURCE_DOES_NOT_EXIST" and "experiment" in message.lower():
            return ValueError(self.tracking.stale_message())
        if code == "RESOURCE_DOES_NOT_EXIST":
            return ValueError(f"{self.tracking.describe()}: {message}; the run was logged to a store that has since "
                              "been deleted or replaced: delete the job's outputs and rerun it")
        return ValueError(f"{self.tracking.describe()}: {message}; check mlflow.tracking_uri and that this is the "
                          f"store 'advseg tracking' set up")

    # run-level helpers ------------------------------------------------------------------------
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


def first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
