"""Chores every workflow job shares: logging, JSON files written whole or not at all."""

from __future__ import annotations

import contextlib
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
    with atomic_file(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_file_list(paths, out: Path, log: Path) -> None:
    """A JSON list of ``paths``: one file that stands for many inputs of many later jobs."""
    paths = [str(path) for path in paths]
    write_json(out, paths)
    Path(log).write_text(f"{len(paths)} files listed in {out}\n")


def read_file_list(path: Path) -> list[Path]:
    """The paths of a :func:`write_file_list` file; anything else is an error naming it."""
    paths = _load_json(path)
    if not isinstance(paths, list) or not all(isinstance(entry, str) for entry in paths):
        raise ValueError(f"{path}: expected a JSON list of file paths; delete it and rerun the workflow to write "
                         "it again")
    return [Path(entry) for entry in paths]


def write_npz(path: Path, arrays: dict) -> None:
    """Write an uncompressed .npz via a temporary file and a rename."""
    import numpy as np

    with atomic_file(path, "wb") as handle:
        np.savez(handle, **arrays)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str):
    """A temporary file beside ``path`` renamed onto it if the block succeeds, else removed.

    An OSError (full disk, read-only folder) names ``path``: a failed write says which output it was.
    """
    path = Path(path)
    name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        encoding = None if "b" in mode else "utf-8"
        with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
                                         encoding=encoding) as handle:
            name = handle.name
            yield handle
        os.replace(name, path)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        if name is not None and os.path.exists(name):
            os.unlink(name)


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


def _load_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read JSON ({error}); delete it and rerun the workflow to write "
                         "it again") from error


def read_json(path: Path, required: tuple[str, ...] = ()) -> dict:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}; delete it and rerun the workflow to "
                         "write it again")
    return data
