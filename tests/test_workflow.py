"""The real workflow, end to end, on a tiny config: Snakemake, torch, MLflow, matplotlib.

One run is killed halfway (a training job dies after its first epoch), the rerun
finishes the rest and resumes the training, and a third run has nothing to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from loopback import free_port, wait_until_healthy

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "configs" / "tiny.yaml"
MODELS = ["Unet-resnet18"]
METHODS, LOSSES, EPSILONS = ["fgsm", "pgd"], ["bce", "dicefocal"], ["0.01", "0.05"]
REPLICATE = "fold_0/seed_0"
EXPECTED_JOBS = {"download": 1, "tracking": 1, "train": 1, "checkpoint": 1, "attack": 4, "aggregate": 1, "all": 1}

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def workflow_copy(directory: Path) -> Path:
    for name in ("Snakefile", "config.yaml", "workflow", "envs", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, directory / name)
    return directory


def snakemake(directory: Path, *args: str, **popen) -> subprocess.Popen | subprocess.CompletedProcess:
    command = [str(BIN / "snakemake"), "--cores", "2", "--configfile", str(TINY), *args]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if popen:
        return subprocess.Popen(command, cwd=directory, env=env, text=True, **popen)
    return subprocess.run(command, cwd=directory, env=env, text=True, capture_output=True, timeout=600)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before it starts."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def pid_of_training(arch: str, directory: Path) -> int | None:
    """The `advseg train` job of this test's workflow, never one of another workflow on the machine."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        if (b"train" in argv and arch.encode() in argv and any(a.endswith(b"advseg") for a in argv[:2])
                and cwd == directory.resolve()):
            return int(entry.name)
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run 1 is killed mid-training, run 2 finishes while `advseg mlflow-ui` serves the store, run 3 has nothing
    left to do."""
    directory = workflow_copy(tmp_path_factory.mktemp("workflow"))
    resume_state = directory / f"results/models/Unet-resnet18/{REPLICATE}/train/resume.pt"
    first = snakemake(directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    killed = False
    while first.poll() is None and time.monotonic() < deadline and not killed:
        pid = pid_of_training("Unet", directory) if resume_state.exists() else None
        if pid:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    first_output = first.communicate(timeout=300)[0]
    assert killed, f"the training job was never seen between epochs:\n{first_output[-3000:]}"
    # a user browsing while the workflow runs: `make mlflow-ui` on the store the first run created
    port = free_port()
    ui = subprocess.Popen([str(BIN / "advseg"), "mlflow-ui", "--config", str(TINY), "--port", str(port)],
                          cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        second = snakemake(directory)
        third = snakemake(directory)
        yield {"dir": directory, "first": (first.returncode, first_output), "second": second, "third": third,
               "ui": (ui, f"http://127.0.0.1:{port}")}
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_killed_job_fails_the_run_and_keeps_its_resume_state(runs):
    returncode, output = runs["first"]
    assert returncode != 0
    assert job_counts(output) == EXPECTED_JOBS
    assert "Error in rule train" in output


def test_rerun_finishes_the_rest_and_resumes_training(runs):
    second = runs["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    counts = job_counts(second.stderr)
    assert "download" not in counts and "tracking" not in counts
    assert counts["train"] == 1 and counts["attack"] == 4
    log = (runs["dir"] / f"results/logs/train/Unet-resnet18/{REPLICATE}.log").read_text()
    assert "resuming after epoch" in log
    assert not (runs["dir"] / f"results/models/Unet-resnet18/{REPLICATE}/train/resume.pt").exists()


def test_rerun_after_success_does_nothing(runs):
    third = runs["third"]
    assert third.returncode == 0
    assert "Nothing to be done" in third.stderr


def test_every_output_exists(runs):
    results = runs["dir"] / "results"
    for model in MODELS:
        assert (results / f"models/{model}/{REPLICATE}/model.safetensors").stat().st_size > 0
        assert (results / f"plots/examples/{model}.png").stat().st_size > 0
        for method in METHODS:
            for loss in LOSSES:
                job = results / f"attacks/{model}/{REPLICATE}/{method}/standard/{loss}"
                assert (job / "transfer.npz").exists()
                for eps in EPSILONS:
                    for kind in ("json", "slices.npz", "example.npz"):
                        assert (job / f"eps_{eps}.{kind}").exists()
    for table in ("attack_summary.csv", "attack_summary_replicates.csv", "attack_losses.md", "attack_losses.csv",
                  "ablation.md", "size.csv", "size.md", "robustness.md", "certified.md", "transfer.csv", "sanity.md",
                  "sanity.csv"):
        assert (results / "tables" / table).stat().st_size > 0, table
    claims = (results / "claims.md").read_text()
    # the held-out fold of the 32x32 template holds 2 slabs: the page says so and claims nothing
    assert "**Independent units:** slab of the one MNI152 template brain; n = 2" in claims
    assert "cannot tell: too few independent units (n = 2)" in claims
    for plot in ("param_size_correlation.png", "dice_vs_eps.png", "loss_curve.png", "transfer.png"):
        assert (results / "plots" / plot).read_bytes().startswith(b"\x89PNG")
    for rule in EXPECTED_JOBS.keys() - {"all", "tracking", "aggregate", "download"}:
        assert list((results / "logs" / rule).rglob("*.log")), rule
        assert list((results / "benchmarks" / rule).rglob("*.tsv")), rule


def test_summary_table(runs):
    table = pd.read_csv(runs["dir"] / "results/tables/attack_summary.csv")
    attacked = table[table.attack != "worst"]
    assert len(attacked) == len(MODELS) * len(METHODS) * len(LOSSES) * len(EPSILONS)
    assert len(table[table.attack == "worst"]) == len(MODELS) * len(EPSILONS)
    assert {"arch", "encoder", "params", "attack_loss", "eps", "clean_dice", "adv_dice", "diff", "seed", "fold",
            "clean_dice_study", "adv_dice_study", "adv_dice_ci_low", "adv_dice_ci_high", "diff_ci_low",
            "diff_ci_high", "clean_hd95", "adv_hd95"} <= set(table.columns)
    assert set(table.model) == set(MODELS) and set(attacked.attack) == set(METHODS)
    assert sorted(table.eps.unique()) == [0.01, 0.05]
    assert (attacked.linf <= attacked.eps + 1e-6).all()
    learned = table[table.clean_dice > 0]
    assert len(learned) >= 4, "the tiny model should segment something"
    expected_diff = (learned.clean_dice - learned.adv_dice) / learned.clean_dice
    assert ((learned["diff"] - expected_diff).abs() < 1e-5).all(), "the CSV keeps 6 significant digits"
    assert (table.n_units == 2).all() and table.adv_dice_ci_low.isna().all(), "2 units: no interval"
    worst = table[table.attack == "worst"].set_index(["model", "eps"])["adv_dice"]
    assert (attacked.apply(lambda row: worst[(row.model, row.eps)] <= row.adv_dice + 1e-12, axis=1)).all(), \
        "the worst case is at least as low as every attack"
    markdown = (runs["dir"] / "results/tables/attack_losses.md").read_text()
    assert "bce" in markdown and "dicefocal" in markdown


def test_mlflow_runs(runs):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs['dir'] / 'results/mlflow.db'}")
    experiment = client.get_experiment_by_name("advseg-test")
    all_runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_stage: dict[str, list] = {}
    for run in all_runs:
        by_stage.setdefault(run.data.tags.get("stage"), []).append(run)
    finished_train = [r for r in by_stage["train"] if r.info.status == "FINISHED"]
    assert len(by_stage["train"]) == len(finished_train) == 1, "the resumed job reopened the killed job's run"
    assert len(by_stage["attack"]) == 8 and len(by_stage["aggregate"]) == 1
    train_ids = {r.info.run_id for r in finished_train}
    for run in by_stage["attack"]:
        tags = run.data.tags
        assert tags["eps"] in EPSILONS and tags["attack"] in METHODS and tags["attack_loss"] in LOSSES
        assert tags["model"] in MODELS and tags["variant"] == "standard"
        assert tags["mlflow.parentRunId"] in train_ids
        assert {"clean_dice", "adv_dice", "diff", "clean_dice_study", "adv_hd95"} <= set(run.data.metrics)
        objective = client.get_metric_history(run.info.run_id, "attack_objective")
        assert sorted(m.step for m in objective) == ([1, 2, 3] if tags["attack"] == "pgd" else []), \
            "PGD logs its loss at every step"
    for run in finished_train:
        assert "clean_dice" in run.data.metrics, "checkpoint logs clean scores into the training run"
        history = client.get_metric_history(run.info.run_id, "inner_val_dice")
        assert sorted({m.step for m in history}) == [1, 2, 3], "every epoch, before and after the kill"
    artifacts = {a.path for a in client.list_artifacts(by_stage["aggregate"][0].info.run_id, "plots")}
    assert "plots/param_size_correlation.png" in artifacts
    examples = {a.path for a in client.list_artifacts(by_stage["aggregate"][0].info.run_id, "plots/examples")}
    assert examples == {f"plots/examples/{model}.png" for model in MODELS}


def test_mlflow_ui_serves_the_runs(runs):
    """What a user does to browse the runs: `advseg mlflow-ui` (`make mlflow-ui`) on the workflow's
    store, on loopback (started while the rerun logged to the store)."""
    import urllib.request

    server, base = runs["ui"]
    wait_until_healthy(f"{base}/health", server, 90)
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=advseg-test") as r:
        experiment_id = json.load(r)["experiment"]["experiment_id"]
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [experiment_id],
                                                      "filter": "tags.stage = 'attack'",
                                                      "max_results": 100}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as r:
        assert len(json.load(r)["runs"]) == 8


def test_html_report_holds_the_tables_and_plots(runs):
    result = snakemake(runs["dir"], "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (runs["dir"] / "report.html").read_text(errors="replace")
    for name in ("attack_summary.csv", "param_size_correlation.png", "dice_vs_eps.png", "attack_losses.md",
                 "sanity.md", "transfer.png", f"{MODELS[0]}.png"):
        assert name in html
    assert "Attack success at the correlation eps against model size" in html, "captions are in the report"
    assert "claims.md" in html
