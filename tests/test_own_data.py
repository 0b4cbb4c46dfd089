"""Your own data and models, end to end through Snakemake: the shipped folder and NIfTI
examples with imported checkpoints (issue: bring your own data).

The folder run trains one model, imports another, and attacks both with the study's
options (its step, its swapped loss call, each channel on its own, its per-slice Dice):
on this data classes are absent from some slices, where the two Dice protocols differ.
The NIfTI run asks only for what its imported single-channel model needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIGS = REPO / "tests" / "configs"
STUDY_VARIANT = "study-study-channels"

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def own_data_run(directory: Path, *args: str) -> Path:
    """Snakemake on a copy of the workflow and the shipped examples, their imported weights written."""
    for item in ("Snakefile", "config.yaml", "workflow", "envs", "profiles"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, directory / item)
    shutil.copytree(REPO / "tests" / "data", directory / "tests" / "data")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "tests/data/make_examples.py", "--checkpoints", "results/imported"],
                   cwd=directory, env=env, check=True, capture_output=True, timeout=300)
    result = subprocess.run([str(BIN / "snakemake"), "--cores", "2", *args], cwd=directory, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return directory / "results"


@pytest.fixture(scope="module")
def folder_results(tmp_path_factory):
    return own_data_run(tmp_path_factory.mktemp("folder"), "--configfile", str(CONFIGS / "folder.yaml"),
                        str(CONFIGS / "study_options.yaml"))


def test_folder_data_with_a_trained_and_an_imported_model(folder_results):
    trained, imported = "FPN-mobilenet_v2", "Unet-resnet18"
    assert (folder_results / f"models/{trained}/fold_0/seed_0/train/best.safetensors").exists()
    assert not (folder_results / f"models/{imported}/fold_0/seed_0/train").exists(), "an imported model is not trained"
    card = json.loads((folder_results / f"models/{imported}/fold_0/seed_0/model_card.json").read_text())
    assert card["source"] == "imported" and card["imported_from"].endswith(".pt")
    table = pd.read_csv(folder_results / "tables/attack_summary.csv")
    assert set(table["model"]) == {trained, imported}
    assert table.loc[table.model == imported, "clean_dice"].notna().all()
    transfer = pd.read_csv(folder_results / "tables/transfer.csv")
    assert {trained, imported} <= set(transfer["source_model"])
    for model in (trained, imported):
        assert json.loads((folder_results / f"transfer/{model}/fold_0/seed_0.json").read_text()), model
        assert (folder_results / f"plots/examples/{model}.png").read_bytes().startswith(b"\x89PNG")
    size = pd.read_csv(folder_results / "tables/size.csv", keep_default_na=False)
    for row in size.itertuples():   # two epochs: a model below report.min_clean_score is named and left out
        assert row.n_models + len([m for m in row.excluded.split(";") if m]) == 2
        assert row.verdict == f"too few models (n = {row.n_models})"
    assert "**Independent units:** group of images (data.folder.group_pattern); n = 1" in \
        (folder_results / "claims.md").read_text()
    assert (folder_results / "plots/transfer.png").read_bytes().startswith(b"\x89PNG")


def test_the_studys_options_run_end_to_end(folder_results):
    job = folder_results / f"attacks/Unet-resnet18/fold_0/seed_0/fgsm/{STUDY_VARIANT}"
    for loss in ("bce", "dicefocal"):
        record = json.loads((job / loss / "eps_0.05.json").read_text())
        assert (record["step"], record["loss_argument_order"], record["input"]) == ("study", "study", "channels")
        assert record["linf"] > 0.05 + 1e-6, "the study's step also dims the image, beyond eps"
    table = pd.read_csv(folder_results / "tables/attack_summary.csv")
    assert set(table.variant) == {STUDY_VARIANT}
    assert (table.clean_dice != table.clean_dice_study).any(), "classes absent from slices: the protocols differ"
    assert "dice_study" in (folder_results / "tables/attack_losses.md").read_text()


def test_nifti_data_with_an_imported_single_channel_model(tmp_path):
    model = "FPN-mobilenet_v2"
    attack = f"results/attacks/{model}/fold_0/seed_0/fgsm/standard/bce/eps_0.05.json"
    results = own_data_run(tmp_path, attack, "--configfile", str(CONFIGS / "nifti.yaml"))
    card = json.loads((results / f"models/{model}/fold_0/seed_0/model_card.json").read_text())
    assert card["source"] == "imported" and card["in_channels"] == 1
    record = json.loads((tmp_path / attack).read_text())
    assert record["model"] == model and 0 <= record["adv_dice"] <= 1
    assert not (results / "models/Unet-resnet18").exists(), "only what the asked-for file needs ran"
