"""A bad config stops Snakemake before any job, naming the key, and writes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOOD_MODEL = "models:\n  - {arch: Unet, encoder: resnet18}\n"


@pytest.mark.parametrize("config, message", [
    ("models:\n  - {arch: Unet, encoder: resnet19}\n", "models[0].encoder: unknown value 'resnet19' (did you mean 'resnet18'?)"),
    ("models:\n  - {arch: UNet3D, encoder: resnet18}\n", "models[0].arch: unknown value 'UNet3D'"),
    ("models: []\n", "[] should be non-empty"),
    (GOOD_MODEL + "attack: {epsilons: [0.01, 1.5]}\n", "1.5 is greater than the maximum of 1"),
    (GOOD_MODEL + "attack: {losses: [hinge]}\n", "'hinge' is not one of"),
    (GOOD_MODEL + "training: {epochs: ten}\n", "'ten' is not of type 'integer'"),
    (GOOD_MODEL + "trainig: {epochs: 3}\n", "'trainig' was unexpected"),
    (GOOD_MODEL + "data: {folds: 5, fold: 5}\n", "data.fold: 5 must be smaller than data.folds"),
    (GOOD_MODEL + "report: {correlation_eps: 0.3}\n", "report.correlation_eps: 0.3 is not one of attack.epsilons"),
])
def test_bad_config_is_refused_before_any_job(tmp_path, config, message):
    for name in ("Snakefile", "config.yaml", "workflow", "envs"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    (tmp_path / "bad.yaml").write_text(config)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--configfile", "bad.yaml"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()
