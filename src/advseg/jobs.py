"""Chores every workflow job shares: logging, JSON files written whole or not at all."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow.store", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_json(path: Path, data: dict | list) -> None:
    """Write JSON via a temporary file and a rename, so no reader sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(handle.name, path)


def write_npz(path: Path, arrays: dict) -> None:
    """Write an uncompressed .npz via a temporary file and a rename."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as handle:
        np.savez(handle, **arrays)
    os.replace(handle.name, path)


def read_npz(path: Path, required: tuple[str, ...], producer: str) -> dict:
    """All arrays of an .npz written by ``producer``; an unreadable file or a missing key names the file."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz ({error}); delete it and rerun the workflow "
                         f"to let {producer} write it again") from error
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ValueError(f"{path}: not written by {producer}, missing {', '.join(missing)}")
    return arrays


def read_json(path: Path, required: tuple[str, ...] = ()) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    return data
