"""Creating the MLflow store and experiment once, before the jobs fan out (the ``tracking`` rule).

Parallel first writes to a fresh SQLite store race on its schema migration, so one job
creates the store and the experiment and writes their ids to the tracking file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.jobs import write_json
from advseg.tracking.experiment import Tracking
from advseg.tracking.store import Store, StoreUnreachable

log = logging.getLogger(__name__)


def init_tracking(tracking_uri: str, experiment: str, artifact_dir: Path, out: Path) -> Tracking:
    """Create (or find) the experiment and record where it is."""
    store = Store(Tracking(tracking_uri, "", experiment, source=Path(out)))
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
