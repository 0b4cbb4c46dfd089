"""MLflow logging under load, with the store down, with a stale tracking file, after a kill.

Jobs are real processes (tests/…/job.py written per test) so that every one pays its own
start-up, holds its own locks and finds its own store, as Snakemake jobs do. One
`mlflow server` on loopback serves the whole module, started and stopped by PID; a
server that is down is a loopback port nobody listens on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import ViewType  # noqa: E402

from loopback import free_port, wait_until_healthy  # noqa: E402

from advseg.tracking import (PARENT_TAG, PENDING_TAG, Tracking, init_tracking, job_run,  # noqa: E402
                             mark_killed, sync_pending)

pytestmark = pytest.mark.slow  # real MLflow servers and job processes

ROOT = Path(__file__).resolve().parents[1]
JOBS = 8
STEPS = 4

JOB = r'''
import json, sys, time
from pathlib import Path
from advseg.tracking import Tracking, job_run

spec = json.loads(sys.argv[1])
import mlflow  # paid before the barrier, so the jobs really log at once
for store in spec.get("stores") or [spec]:  # one run per store, each after its own barrier
    if store.get("go"):
        Path(store["go"] + "." + spec["name"]).write_text("")  # at the barrier
    while store.get("go") and not Path(store["go"]).exists():
        time.sleep(0.05)
    tracking = Tracking.load(store["tracking"])
    out = Path(spec["out"])
    out.write_text(json.dumps({"result": spec["name"]}))  # the job's result file
    with job_run(tracking, spec["name"], {"stage": spec["stage"]}, parent_run_id=spec.get("parent"),
                 run_id=spec.get("run_id")) as run:
        Path(spec["out"] + ".run_id").write_text(run.run_id)
        run.log_params({"name": spec["name"], "lr": 0.01})
        for step in range(spec["steps"]):
            run.log_metrics({"loss": 1.0 / (step + 1), "val_dice": step / 10}, step=step)
        run.log_flat_metrics("clean_", {"dice": 0.5, "dice_per_class": {"stomach": 0.25}, "model": "x"})
        run.set_tags({"device": "cpu"})
        run.log_artifact(out)
        if spec.get("hang"):
            Path(spec["out"] + ".ready").write_text("")
            time.sleep(600)
    print(json.dumps({"run_id": run.run_id, "offline": run.offline}), flush=True)
'''


def job_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("PYTEST_CURRENT_TEST", None)
    return {**env, **extra}


def start_job(tmp: Path, spec: dict, env: dict | None = None) -> subprocess.Popen:
    script = tmp / "job.py"
    if not script.exists():
        script.write_text(JOB)
    return subprocess.Popen([sys.executable, str(script), json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or job_env(), start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> dict:
    """The job's last run (``run_id``, ``offline``), every run it logged (``runs``) and its stderr."""
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    runs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]  # MLflow prints links too
    return runs[-1] | {"runs": runs, "stderr": stderr}


class Server:
    """One `mlflow server` (SQLite backend, proxied artifacts) on a free loopback port."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server; :meth:`ready` waits until it answers."""
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.directory / 'server.db'}",
             "--artifacts-destination", str(self.directory / "artifacts")],
            cwd=self.directory, stdout=subprocess.DEVNULL, stderr=open(self.directory / "server.log", "a"),
            start_new_session=True)

    def ready(self) -> "Server":
        wait_until_healthy(f"{self.uri}/health", self.process, 180,
                           lambda: (self.directory / "server.log").read_text()[-3000:])
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        self.process = None


@pytest.fixture(scope="module")
def booting_server(tmp_path_factory):
    """The module's server, started but maybe not answering yet: a test may work while it boots."""
    server = Server(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(booting_server):
    return booting_server.ready()


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Each test starts as a new job would: no store remembered as unreachable."""
    from advseg.tracking import store

    store._unreachable.clear()


def runs_of(uri: str, experiment_id: str) -> list:
    return MlflowClient(uri).search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000)


def check_job_run(client: MlflowClient, run, name: str, artifact: str) -> None:
    assert run.info.status == "FINISHED"
    assert run.data.params == {"name": name, "lr": "0.01"}
    assert run.data.tags["device"] == "cpu" and run.data.tags["stage"] == "attack"
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
    assert loss == [(step, 1.0 / (step + 1)) for step in range(STEPS)], "every step, exactly once"
    assert run.data.metrics["clean_dice"] == 0.5 and run.data.metrics["clean_dice_per_class_stomach"] == 0.25
    assert "clean_model" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [artifact]


def test_jobs_logging_at_once_lose_no_run(booting_server, tmp_path):
    """8 processes released together log to one SQLite store, then, released again, to one server:
    every run, with every step of every metric, is in each store."""
    stores = {"sqlite": f"sqlite:///{tmp_path / 'mlflow.db'}", "server": booting_server.uri}
    barriers = {store: tmp_path / store / "go" for store in stores}
    for barrier in barriers.values():
        barrier.parent.mkdir()
    jobs = [start_job(tmp_path, {"name": f"job{i}", "stage": "attack", "out": str(tmp_path / f"job{i}.json"),
                                 "steps": STEPS,
                                 "stores": [{"tracking": str(tmp_path / store / "mlflow" / "tracking.json"),
                                             "go": str(barriers[store])} for store in stores]})
            for i in range(JOBS)]
    trackings = {}
    for store, uri in stores.items():
        if store == "server":
            booting_server.ready()  # it booted while the jobs logged to SQLite
        trackings[store] = init_tracking(uri, f"concurrent-{store}", tmp_path / store / "artifacts",
                                         tmp_path / store / "mlflow" / "tracking.json")
        deadline = time.monotonic() + 300
        while len(list(barriers[store].parent.glob("go.job*"))) < JOBS:  # every job waits at the barrier
            assert time.monotonic() < deadline and all(job.poll() is None for job in jobs), "a job never got there"
            time.sleep(0.1)
        barriers[store].write_text("")
    results = [finish(job) for job in jobs]
    assert all(len(result["runs"]) == len(stores) for result in results)
    offline = [result["stderr"][-500:] for result in results if any(run["offline"] for run in result["runs"])]
    assert not offline, offline
    for store, uri in stores.items():
        client = MlflowClient(uri)
        runs = {run.info.run_name: run for run in runs_of(uri, trackings[store].experiment_id)}
        print(f"\n{store}: {len(runs)}/{JOBS} runs found")
        assert sorted(runs) == sorted(f"job{i}" for i in range(JOBS))
        for i in range(JOBS):
            check_job_run(client, runs[f"job{i}"], f"job{i}", f"job{i}.json")
        pending = tmp_path / store / "mlflow" / "pending"
        assert not pending.exists() or not list(pending.glob("*.json"))
    print(f"busy retries: {sum(result['stderr'].count('is busy') for result in results)}")


def test_jobs_finish_while_the_server_is_down_and_sync_logs_them_once(server, tmp_path):
    """Train, reopen (checkpoint) and two children run with the server down; sync logs them later.

    "Down" is the tracking file naming a port nobody listens on, as a stopped server's port is.
    """
    tracking = init_tracking(server.uri, "down", tmp_path / "unused", tmp_path / "mlflow" / "tracking.json")
    before = {run.info.run_id for run in runs_of(server.uri, tracking.experiment_id)}
    up = json.loads(tracking.source.read_text())
    tracking.source.write_text(json.dumps({**up, "tracking_uri": f"http://127.0.0.1:{free_port()}"}))
    env = job_env()
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        env.pop(name, None)  # the module's own bounded defaults
    spec = {"tracking": str(tracking.source), "stage": "attack", "steps": STEPS}
    started = time.monotonic()
    train = finish(start_job(tmp_path, {**spec, "name": "train", "out": str(tmp_path / "train.json")}, env))
    train_seconds = time.monotonic() - started
    assert train["offline"] and train["run_id"].startswith("pending-")
    assert json.loads((tmp_path / "train.json").read_text()) == {"result": "train"}, "the result file is written"
    reopen = finish(start_job(tmp_path, {**spec, "name": "train", "out": str(tmp_path / "card.json"),
                                         "run_id": train["run_id"], "steps": 0}, env))
    assert reopen["run_id"] == train["run_id"], "a reopened pending run keeps its id"
    children = [start_job(tmp_path, {**spec, "name": f"eps{i}", "out": str(tmp_path / f"eps{i}.json"),
                                     "parent": train["run_id"]}, env) for i in range(2)]
    children = [finish(child) for child in children]
    assert all(child["offline"] for child in children)
    pending = tmp_path / "mlflow" / "pending"
    records = {path.name: json.loads(path.read_text()) for path in pending.glob("*.json")}
    assert len(records) == 3, "train (reopened by the checkpoint) + 2 children"
    train_record = records[train["run_id"].removeprefix("pending-") + ".json"]
    assert train_record["status"] == "FINISHED" and train_record["run_id"] is None
    assert [(m["key"], m["step"]) for m in train_record["metrics"] if m["key"] == "loss"] == \
        [("loss", step) for step in range(STEPS)]
    assert [Path(a["path"]).name for a in train_record["artifacts"]] == ["train.json", "card.json"]
    child_records = [r for r in records.values() if r is not train_record]
    assert all(r["parent_run_id"] == train["run_id"] for r in child_records)
    print(f"\na job against a closed port finished in {train_seconds:.1f}s (start-up included)")

    tracking.source.write_text(json.dumps(up))  # the server is back
    saved = tmp_path / "saved"
    shutil.copytree(pending, saved)  # to replay a sync that died before deleting its records
    sync = [sys.executable, "-m", "advseg.cli", "mlflow-sync", "--tracking", str(tracking.source)]
    first = subprocess.run(sync, capture_output=True, text=True, env=job_env(), timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "synced 3 pending record(s)" in first.stdout
    for path in saved.glob("*.json"):
        shutil.copy(path, pending / path.name)
    replayed = sync_pending(Tracking.load(tracking.source))
    assert sorted(replayed.synced) == sorted(path.stem for path in saved.glob("*.json")) and not replayed.failed
    assert sync_pending(Tracking.load(tracking.source)).synced == {}, "nothing left to sync"
    assert not list(pending.glob("*.json"))

    client = MlflowClient(server.uri)
    runs = [run for run in runs_of(server.uri, tracking.experiment_id) if run.info.run_id not in before]
    by_name = {run.info.run_name: run for run in runs}
    assert sorted(run.info.run_name for run in runs) == ["eps0", "eps1", "train"], "no run twice"
    trained = by_name["train"]
    assert trained.data.tags[PENDING_TAG] == train["run_id"].removeprefix("pending-")
    check_job_run(client, by_name["eps0"], "eps0", "eps0.json")
    assert sorted(a.path for a in client.list_artifacts(trained.info.run_id)) == ["card.json", "train.json"]
    loss = sorted(m.step for m in client.get_metric_history(trained.info.run_id, "loss"))
    assert loss == list(range(STEPS)), "replayed records add no metric twice"
    for name in ("eps0", "eps1"):
        assert by_name[name].data.tags[PARENT_TAG] == trained.info.run_id


def test_a_job_that_reaches_the_store_syncs_the_pending_parent_first(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the closed port below: give up at once
    tracking = init_tracking(server.uri, "parent-first", tmp_path / "unused", tmp_path / "mlflow" / "tracking.json")
    down = Tracking(f"http://127.0.0.1:{free_port()}", tracking.experiment_id, "parent-first",
                    source=tracking.source)
    with job_run(down, "train", {"stage": "train"}) as parent:
        parent.log_metrics({"loss": 0.5}, step=1)
    assert parent.offline
    with job_run(tracking, "eps", {"stage": "attack"}, parent_run_id=parent.run_id) as child:
        child.log_metrics({"adv_dice": 0.1})
    assert not child.offline
    client = MlflowClient(server.uri)
    real_parent = client.get_run(child.run_id).data.tags[PARENT_TAG]
    assert not real_parent.startswith("pending-")
    assert client.get_run(real_parent).data.metrics == {"loss": 0.5}
    assert not list((tmp_path / "mlflow" / "pending").glob("*.json"))


def test_a_deleted_store_with_a_stale_tracking_file_is_one_clear_error(tmp_path):
    db = tmp_path / "mlflow.db"
    tracking_file = tmp_path / "mlflow" / "tracking.json"
    init_tracking(f"sqlite:///{db}", "advseg", tmp_path / "artifacts", tracking_file)
    db.unlink()
    with pytest.raises(ValueError, match=f"{tracking_file}: experiment 'advseg' .* does not exist .* delete"):
        Tracking.load(tracking_file)
    assert not db.exists(), "checking must not create an empty store"
    # a store replaced by another one (the experiment id means nothing there)
    replaced = tmp_path / "replaced.db"  # (a new file: this process keeps the old one's engine)
    init_tracking(f"sqlite:///{replaced}", "other", tmp_path / "artifacts", tmp_path / "other.json")
    stale = json.loads(tracking_file.read_text())
    stale.update(experiment_id="7", tracking_uri=f"sqlite:///{replaced}")
    tracking_file.write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="experiment 'advseg' \\(id 7\\) does not exist"):
        Tracking.load(tracking_file)
    # what the job itself sees if it skipped the check: a ValueError, not an MlflowException
    with pytest.raises(ValueError, match="does not exist"):
        with job_run(Tracking.load(tracking_file, check=False), "x", {}):
            pass
    result = subprocess.run([sys.executable, "-m", "advseg.cli", "mlflow-sync", "--tracking", str(tracking_file)],
                            capture_output=True, text=True, env=job_env(), timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"advseg mlflow-sync: error: {tracking_file}")
    assert "Traceback" not in result.stderr


def test_a_changed_param_is_a_clean_error_naming_the_store(tmp_path):
    tracking = init_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "advseg", tmp_path / "artifacts",
                             tmp_path / "mlflow" / "tracking.json")
    with job_run(tracking, "train", {}) as run:
        run.log_params({"lr": 0.1})
    with pytest.raises(ValueError, match=f"MLflow store sqlite:///{tmp_path / 'mlflow.db'}"):
        with job_run(tracking, "train", {}, run_id=run.run_id) as again:
            again.log_params({"lr": 0.2})
    assert MlflowClient(tracking.tracking_uri).get_run(run.run_id).info.status == "FAILED"


def test_runs_of_killed_jobs_are_marked_killed(server, tmp_path):
    """kill -9 mid-run, once with a SQLite store (mark_killed) and once offline (the sync marks it)."""
    online = init_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "advseg", tmp_path / "artifacts",
                           tmp_path / "online" / "tracking.json")
    offline_file = tmp_path / "offline" / "tracking.json"
    offline_file.parent.mkdir()
    init_tracking(server.uri, "killed", tmp_path / "unused", offline_file)
    real = Tracking.load(offline_file)
    down = {**json.loads(offline_file.read_text()), "tracking_uri": f"http://127.0.0.1:{free_port()}"}
    offline_file.write_text(json.dumps(down))
    jobs = {name: start_job(tmp_path, {"tracking": str(path), "name": name, "stage": "train", "steps": 2,
                                       "out": str(tmp_path / f"{name}.json"), "hang": True})
            for name, path in (("online", online.source), ("offline", offline_file))}
    for name, job in jobs.items():
        deadline = time.monotonic() + 300
        while not (tmp_path / f"{name}.json.ready").exists():
            assert job.poll() is None and time.monotonic() < deadline, job.stderr.read()[-3000:]
            time.sleep(0.2)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    run_id = (tmp_path / "online.json.run_id").read_text()
    client = MlflowClient(online.tracking_uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    assert mark_killed(online, run_id) is True
    assert client.get_run(run_id).info.status == "KILLED"
    assert mark_killed(online, run_id) is False, "only a RUNNING run is marked"

    pending_id = (tmp_path / "offline.json.run_id").read_text()
    record = json.loads((offline_file.parent / "pending" / f"{pending_id.removeprefix('pending-')}.json").read_text())
    assert record["status"] == "RUNNING"
    assert sorted((m["key"], m["step"]) for m in record["metrics"] if m["key"] in ("loss", "val_dice")) == \
        [("loss", 0), ("loss", 1), ("val_dice", 0), ("val_dice", 1)], "flushed at every call, before the kill"
    offline_file.write_text(json.dumps({**down, "tracking_uri": server.uri}))  # the server is back
    report = sync_pending(Tracking.load(offline_file))
    synced = MlflowClient(server.uri).get_run(report.synced[pending_id.removeprefix("pending-")])
    assert synced.info.status == "KILLED" and synced.info.experiment_id == real.experiment_id
    assert synced.data.metrics["loss"] == 0.5
