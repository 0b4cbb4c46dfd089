"""MLflow runs for every job, in one experiment created before the fan-out.

- :mod:`~advseg.tracking.experiment`: the tracking file naming the store and experiment
- :mod:`~advseg.tracking.create`: creating them once (the ``tracking`` rule)
- :mod:`~advseg.tracking.store`: an MlflowClient that retries what is transient
- :mod:`~advseg.tracking.runs`: :func:`job_run`, the run a job logs into
- :mod:`~advseg.tracking.pending`: what a job could not log while the store was down
- :mod:`~advseg.tracking.sync`: logging those records later, exactly once (``advseg mlflow-sync``)
- :mod:`~advseg.tracking.killed`: marking a killed job's run KILLED

A job must finish even when its store cannot be reached (an MLflow server that is
down, a SQLite file that stays locked): :func:`job_run` then records everything the job
could not log in a pending record and hands out ``pending-<id>`` as the run id.

mlflow is imported inside functions: importing it costs every job seconds.
"""

from advseg.tracking.create import init_tracking
from advseg.tracking.experiment import Tracking
from advseg.tracking.killed import mark_killed
from advseg.tracking.pending import PARENT_TAG, PENDING_PREFIX, PENDING_TAG, pending_records
from advseg.tracking.runs import JobRun, job_run
from advseg.tracking.store import StoreUnreachable
from advseg.tracking.sync import SyncReport, sync_pending

__all__ = ["PARENT_TAG", "PENDING_PREFIX", "PENDING_TAG", "JobRun", "StoreUnreachable", "SyncReport", "Tracking",
           "init_tracking", "job_run", "mark_killed", "pending_records", "sync_pending"]
