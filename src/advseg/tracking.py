"""MLflow runs for every job, in one experiment created before the fan-out.

Parallel first writes to a fresh SQLite store race on its schema migration, so the
workflow's ``tracking`` rule creates the store and the experiment once and writes
their ids to a small JSON file; every later job reads that file and only adds runs.
Attack and gradient runs are children of their model's training run, so the MLflow
UI shows each model with its attacks nested under it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class Tracking:
    tracking_uri: str
    experiment_id: str
    experiment_name: str

    @classmethod
    def load(cls, path: Path) -> "Tracking":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"{path}: not a tracking file written by 'advseg tracking' ({error})") from error


def init_tracking(tracking_uri: str, experiment: str, artifact_dir: Path, out: Path) -> Tracking:
    """Create (or find) the experiment and record where it is."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        artifact_location = None if tracking_uri.startswith(("http://", "https://", "databricks")) \
            else Path(artifact_dir).resolve().as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_location)
        log.info("created experiment %r (%s) in %s", experiment, experiment_id, tracking_uri)
    else:
        experiment_id = found.experiment_id
        log.info("using experiment %r (%s) in %s", experiment, experiment_id, tracking_uri)
    tracking = Tracking(tracking_uri, experiment_id, experiment)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(tracking.__dict__, indent=2) + "\n")
    return tracking


@contextlib.contextmanager
def mlflow_run(tracking: Tracking, run_name: str, tags: dict[str, str], run_id: str | None = None,
               parent_run_id: str | None = None) -> Iterator["mlflow.ActiveRun"]:  # noqa: F821
    """Start a new run (or reopen ``run_id``) in the workflow's experiment."""
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri)
    if parent_run_id:
        tags = {**tags, PARENT_TAG: parent_run_id}
    if run_id:
        with mlflow.start_run(run_id=run_id) as run:
            mlflow.set_tags(tags)
            yield run
        return
    with mlflow.start_run(experiment_id=tracking.experiment_id, run_name=run_name, tags=tags) as run:
        yield run


def log_flat_metrics(prefix: str, values: dict, step: int | None = None) -> None:
    """Log numbers from a (possibly nested) dict as metrics named prefix_key[_subkey]."""
    import mlflow

    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{prefix}{key}_{sub}": v for sub, v in value.items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    mlflow.log_metrics(flat, step=step)
