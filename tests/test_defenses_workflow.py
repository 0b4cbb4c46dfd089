"""The defenses axis in the real workflow: one tiny model with pgd_at, smoothing and quantization, run end to
end by Snakemake (training, cards, adaptive attacks, the transfer from the twin, certificates, the report);
the ensemble, which needs two models, planned with a second one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_workflow import BIN, REPLICATE, job_counts, workflow_copy

from advseg import records

DEFENSES_CONFIG = Path(__file__).parent / "configs" / "defenses.yaml"
TWIN = "Unet-resnet18"
DEFENDED = {f"{TWIN}+pgd_at": "pgd_at", f"{TWIN}+smoothing": "smoothing", f"{TWIN}+quantization": "quantization"}
ATTACKS = {"pgd_at": {"apgd", "transfer"}, "smoothing": {"apgd", "apgd+eot", "transfer"},
           "quantization": {"apgd", "apgd+bpda", "transfer"}}

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def snakemake(directory: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--configfile", str(DEFENSES_CONFIG), *args],
                          cwd=directory, env=env, text=True, capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = workflow_copy(tmp_path_factory.mktemp("defenses"))
    finished = snakemake(directory)
    assert finished.returncode == 0, finished.stderr[-4000:]
    return directory, finished.stderr


def test_every_defended_model_trains_or_wraps_its_twin(run):
    directory, output = run
    # the twin, pgd_at and smoothing's noisy base train; quantization wraps the twin's weights
    assert job_counts(output)["train"] == 3 and job_counts(output)["checkpoint"] == 4
    assert job_counts(output)["certify"] == 1
    models = directory / "results/models"
    for name, defense in DEFENDED.items():
        card = json.loads((models / name / REPLICATE / "model_card.json").read_text())
        assert (card["defense"], card["twin"], card["model"]) == (defense, TWIN, name)
        assert card["defense_settings"] == {
            "pgd_at": {"eps": 0.02, "steps": 2, "alpha": 0.25}, "quantization": {"levels": 8},
            "smoothing": {"sigma": 0.25, "n": 8, "n0": 4, "tau": 0.75, "alpha": 0.001, "correction": "holm",
                          "draws_per_forward": 4, "radii": [0.0, 0.1]}}[defense]
    assert not (models / f"{TWIN}+quantization" / REPLICATE / "train").exists()
    history = json.loads((models / f"{TWIN}+smoothing" / REPLICATE / "train/history.json").read_text())
    assert history["defense"] == "smoothing" and history["defense_settings"]["sigma"] == 0.25


def test_each_defense_meets_the_attacks_that_apply_to_it(run):
    directory, _ = run
    for name, defense in DEFENDED.items():
        ran = {path.parent.parent.parent.name for path in (directory / "results/attacks" / name).rglob("eps_0.3.json")}
        assert ran == ATTACKS[defense], name
        for path in (directory / "results/attacks" / name).rglob("eps_*.json"):
            record = json.loads(path.read_text())
            assert (record["defense"], record["twin"]) == (defense, TWIN)
            assert record["linf"] <= record["eps"] + 1e-6
    # the transfer is the twin's PGD perturbation: the twin's own attack at that eps changes the same slices
    transfer = json.loads((directory / f"results/attacks/{TWIN}+pgd_at/{REPLICATE}/transfer/standard/bce/"
                                       "eps_0.3.json").read_text())
    assert transfer["attack"] == "transfer" and transfer["method_settings"]["steps"] == 1, "transfer_method fgsm"


def test_the_report_judges_each_defense_against_its_twin(run):
    directory, _ = run
    table = pd.read_csv(directory / "results/tables/robustness.csv")
    defended = table[table.defense != "none"]
    assert set(defended.model) == set(DEFENDED) and sorted(defended.eps.unique()) == [0.02, 0.3]
    for row in defended.itertuples():
        assert set(row.attacks.split(";")) == {f"{attack}/bce" for attack in ATTACKS[row.defense]}
        # the CSV keeps 6 significant digits
        assert row.twin == TWIN and np.isclose(row.gain, row.robust - row.twin_robust, rtol=0, atol=1e-5)
        assert np.isclose(row.cost, row.clean - row.twin_clean, rtol=0, atol=1e-5)
        assert row.gain_verdict == "too few independent units (n = 2)"
    sanity = pd.read_csv(directory / "results/tables/sanity.csv")
    assert set(sanity[sanity.check == "EOT ≥ plain gradient"].model) == {f"{TWIN}+smoothing"}
    masking = sanity[sanity.check == "no gradient masking"]
    assert {f"{TWIN}+quantization", f"{TWIN}+pgd_at"} <= set(masking.model)
    claims = (directory / "results/claims.md").read_text()
    assert "+pgd_at" not in claims and "- **Models:** 1, " in claims, "the study's claims are about undefended models"
    certificate = records.read_certificate(
        directory / f"results/certified/{TWIN}+smoothing/{REPLICATE}/certificate.npz")
    assert certificate["model"] == f"{TWIN}+smoothing" and list(certificate["radii"]) == [0.0, 0.1]
    certified = pd.read_csv(directory / "results/tables/certified.csv")
    assert list(certified.radius) == [0.0, 0.1] and (certified.abstain_rate.between(0, 1)).all()


def test_defended_runs_are_tagged_in_mlflow(run):
    from mlflow import MlflowClient

    directory, _ = run
    client = MlflowClient(tracking_uri=f"sqlite:///{directory / 'results/mlflow.db'}")
    experiment = client.get_experiment_by_name("advseg-test")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    stages = {(r.data.tags.get("stage"), r.data.tags.get("model")): r for r in found}
    assert stages[("train", f"{TWIN}+pgd_at")].data.tags["defense"] == "pgd_at"
    assert stages[("defend", f"{TWIN}+quantization")].data.tags["twin"] == TWIN, "quantization: a run of its own"
    assert "clean_dice" in stages[("defend", f"{TWIN}+quantization")].data.metrics
    assert stages[("train", TWIN)].data.params.get("defense") == "none"
    certify = stages[("certify", f"{TWIN}+smoothing")]
    assert {"abstain_rate", "certified_dice_r0", "certified_dice_r0.1"} <= set(certify.data.metrics)
    attacked = [r for r in found if r.data.tags.get("stage") == "attack" and r.data.tags["model"] == f"{TWIN}+smoothing"]
    assert {r.data.tags["attack"] for r in attacked} == ATTACKS["smoothing"]
    assert all(r.data.tags["defense"] == "smoothing" for r in attacked)


def test_the_ensemble_is_planned_from_its_members(tmp_path):
    directory = workflow_copy(tmp_path)
    plan = snakemake(directory, "-n", "--config",
                     "models=[{'arch': 'Unet', 'encoder': 'resnet18'}, {'arch': 'Linknet', 'encoder': 'resnet18'}]",
                     "defenses=['none', 'ensemble']")
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = job_counts(plan.stdout + plan.stderr)
    assert counts["ensemble"] == 1 and counts["train"] == 2 and counts["checkpoint"] == 2
    assert counts["attack"] == 3, "apgd on two models and the ensemble; no twin to transfer from"
    assert "--members results/models/Unet-resnet18/fold_0/seed_0/model_card.json " \
           "results/models/Linknet-resnet18/fold_0/seed_0/model_card.json" in plan.stdout + plan.stderr
