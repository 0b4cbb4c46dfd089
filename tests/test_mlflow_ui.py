"""advseg mlflow-ui (make mlflow-ui): which store it opens, and what it says when there is none.

The UI itself is started against a real store in test_workflow.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from advseg.commands.mlflow_ui import read_config, ui_command
from advseg.settings import default


@pytest.fixture
def in_checkout(tmp_path, monkeypatch):
    """A folder holding config.yaml, the working directory of `make mlflow-ui`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("results_dir: runs\nmodels: [{arch: Unet, encoder: resnet18}]\n")
    return tmp_path


def test_the_configs_store_with_its_tracking_file(in_checkout, capsys):
    store = in_checkout / "runs" / "mlflow.db"
    store.parent.mkdir()
    store.write_bytes(b"")
    (in_checkout / "runs" / "mlflow").mkdir()
    (in_checkout / "runs" / "mlflow" / "tracking.json").write_text(json.dumps({"experiment_id": "3"}))
    command = ui_command(read_config(None), 5123)
    assert command == [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", "sqlite:///runs/mlflow.db",
                       "--host", "127.0.0.1", "--port", "5123"]
    assert "Runs: http://127.0.0.1:5123/#/experiments/3/runs" in capsys.readouterr().err


def test_a_configfile_on_top_and_the_schemas_defaults(in_checkout, capsys):
    mine = in_checkout / "mine.yaml"
    mine.write_text("mlflow: {tracking_uri: 'http://tracking.example:5000'}\n")
    config = read_config(mine)
    assert config["results_dir"] == "runs" and config["mlflow"]["experiment"] == default("mlflow.experiment")
    assert ui_command(config, 5000) is None, "a server serves its own UI"
    err = capsys.readouterr().err
    assert "is the server http://tracking.example:5000" in err and "runs/mlflow/tracking.json is missing" in err
    (in_checkout / "config.yaml").write_text("models: [{arch: Unet, encoder: resnet18}]\n")
    assert read_config(None)["results_dir"] == default("results_dir")


def test_no_store_yet_is_one_line_naming_the_key(in_checkout):
    advseg = Path(sys.executable).with_name("advseg")
    result = subprocess.run([str(advseg), "mlflow-ui"], cwd=in_checkout, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("advseg mlflow-ui: error: mlflow.tracking_uri: "
                                                      "runs/mlflow.db does not exist yet: run the workflow first")
