"""Your own data and models, end to end through Snakemake: the shipped folder and NIfTI
examples, each with one model trained here and one imported checkpoint (issue: bring
your own data). The imported model is never trained, yet joins every table."""

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

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize("name, trained, imported", [
    ("folder", "FPN-mobilenet_v2", "Unet-resnet18"),
    ("nifti", "Unet-resnet18", "FPN-mobilenet_v2"),
])
def test_own_data_with_an_imported_checkpoint(tmp_path, name, trained, imported):
    for item in ("Snakefile", "config.yaml", "workflow", "envs", "profiles"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, tmp_path / item)
    shutil.copytree(REPO / "tests" / "data", tmp_path / "tests" / "data")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "tests/data/make_examples.py", "--checkpoints", "results/imported"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    config = REPO / "tests" / "configs" / f"{name}.yaml"
    result = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--configfile", str(config)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / "results"
    assert (results / f"models/{trained}/fold_0/seed_0/train/best.safetensors").exists()
    assert not (results / f"models/{imported}/fold_0/seed_0/train").exists(), "an imported model is not trained"
    card = json.loads((results / f"models/{imported}/fold_0/seed_0/model_card.json").read_text())
    assert card["source"] == "imported" and card["imported_from"].endswith(".pt")
    table = pd.read_csv(results / "tables/attack_summary.csv")
    assert set(table["model"]) == {trained, imported}
    assert table.loc[table.model == imported, "clean_dice"].notna().all()
    transfer = pd.read_csv(results / "tables/transfer.csv")
    assert {trained, imported} <= set(transfer["source_model"])
