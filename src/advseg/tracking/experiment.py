"""The tracking file: which MLflow store and experiment every job of a workflow logs into.

The ``tracking`` rule writes it once (:mod:`advseg.tracking.create`); each job reads it
and first checks, cheaply, that the store still holds the experiment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracking:
    """What the tracking file records: the store, and the experiment every job logs into."""
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
            raise ValueError(self.stale_message())
        if stage == "deleted":
            raise ValueError(
                f"{self.describe()}: experiment {self.experiment_name!r} (id {self.experiment_id}) is deleted; "
                f"restore it (mlflow experiments restore --experiment-id {self.experiment_id}, with "
                f"MLFLOW_TRACKING_URI={self.tracking_uri}) or delete {self.source or 'the tracking file'} and rerun "
                "the workflow to create a new one")

    def stale_message(self) -> str:
        target = self.source or "the tracking file"
        return (f"{target}: experiment {self.experiment_name!r} (id {self.experiment_id}) does not exist in "
                f"{self.tracking_uri} (the store was deleted or replaced after 'advseg tracking' wrote this file); "
                f"delete {target} and rerun the workflow: its 'tracking' rule creates the experiment again "
                "(and the jobs that log into it rerun)")


def sqlite_path(tracking_uri: str) -> Path:
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


def _sqlite_experiment_stage(tracking: Tracking) -> str | None:
    path = sqlite_path(tracking.tracking_uri)
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
