"""advseg mlflow-ui: browse the workflow's runs (``make mlflow-ui``).

Reads config.yaml, then ``--config`` on top (as ``snakemake --configfile`` does), says
where the runs are, and starts ``mlflow ui`` on 127.0.0.1 for a SQLite store; an MLflow
server serves its own UI, so for one it only prints the address.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

BASE_CONFIG = Path("config.yaml")


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="your --configfile, read on top of config.yaml as snakemake does")
    parser.add_argument("--port", type=int, default=5000, help="port of the UI on 127.0.0.1")


def run(args) -> None:
    command = ui_command(read_config(args.config), args.port)
    if command:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(command[0], command)


def read_config(config: Path | None) -> dict:
    """results_dir and mlflow of config.yaml with ``config`` on top, the schema's defaults filled in."""
    import yaml

    from advseg import settings

    merged: dict = {"mlflow": {}}
    for path in [BASE_CONFIG] + ([config] if config and Path(config) != BASE_CONFIG else []):
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"{path}: cannot read the config ({error})") from error
        if "results_dir" in data:
            merged["results_dir"] = data["results_dir"]
        merged["mlflow"].update(data.get("mlflow") or {})
    return {"results_dir": merged.get("results_dir", settings.default("results_dir")),
            "mlflow": settings.fill("mlflow", merged["mlflow"])}


def ui_command(config: dict, port: int) -> list[str] | None:
    """The ``mlflow ui`` command line for the configured store (None for a server); says on
    stderr where the runs are."""
    from advseg.config import tracking_file, tracking_uri
    from advseg.tracking.experiment import sqlite_path

    uri, recorded = tracking_uri(config), tracking_file(config)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"
    if recorded.exists():
        experiment_id = json.loads(recorded.read_text()).get("experiment_id", "")
        print(f"Runs: {base}/#/experiments/{experiment_id}/runs  (or the UI's 'Model training' view)",
              file=sys.stderr)
    else:
        print(f"no runs yet ({recorded} is missing): run the workflow first", file=sys.stderr)
    if uri.startswith(("http://", "https://")):
        print(f"mlflow.tracking_uri is the server {uri}: it serves the UI itself "
              "(start it with 'make mlflow-server' if it is not running)", file=sys.stderr)
        return None
    if not uri.startswith("sqlite:///"):
        raise ValueError(f"mlflow.tracking_uri: {uri!r} is neither sqlite:/// nor http(s)://")
    if not sqlite_path(uri).exists():
        raise ValueError(f"mlflow.tracking_uri: {sqlite_path(uri)} does not exist yet: run the workflow first")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
            "--port", str(port)]
