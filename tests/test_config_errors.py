"""A bad config stops Snakemake before any job, naming the key, and writes nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOOD_MODEL = "models:\n  - {arch: Unet, encoder: resnet18}\n"


def run_snakemake(directory: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on a copy of the workflow in ``directory``."""
    for name in ("Snakefile", "config.yaml", "workflow", "envs"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, directory / name)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "snakemake"), "--cores", "1", *args], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=120)


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
    (tmp_path / "bad.yaml").write_text(config)
    result = run_snakemake(tmp_path, "--configfile", "bad.yaml")
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_uwmadison_without_its_data_is_refused_before_any_job(tmp_path):
    result = run_snakemake(tmp_path, "--configfile", str(REPO / "workflow/configs/uwmadison_study.yaml"))
    assert result.returncode != 0
    assert "data.uwmadison.root: '/path/to/uw-madison-gi-tract-image-segmentation' is not a folder" in result.stderr
    assert not (tmp_path / "results").exists()


def test_study_config_plans_the_studys_grid(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "root.yaml").write_text(f"data: {{uwmadison: {{root: {tmp_path / 'data'}}}}}\n")
    result = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "workflow/configs/uwmadison_study.yaml"),
                           str(tmp_path / "root.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^train\s+4$", result.stdout, re.M) and re.search(r"^attack\s+48$", result.stdout, re.M)
