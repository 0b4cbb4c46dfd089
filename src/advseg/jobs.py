"""Chores every workflow job shares: logging, and outputs written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow.store", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_json(path: Path, data: dict | list) -> None:
    """Write JSON whole or not at all (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


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
    """Write an uncompressed .npz whole or not at all (see :func:`atomic_path`)."""
    import numpy as np

    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)  # through a handle: np.savez would append .npz to another name


PARTIAL_PREFIX = ".partial-"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """A temporary path beside ``target`` that replaces it only if the block succeeds.

    The block writes the file (with ``directory=True``: fills the directory) at the yielded
    path, ``.partial-<random>-<target's name>``: hidden, and ending like the target, so writers
    that go by the suffix still work. On success it is renamed onto ``target`` (an existing
    directory there is removed only once the new one is in place), so a reader, or a job
    killed mid-write, never sees half an output. On any error it is removed; an OSError is
    raised again naming ``target``, so a full disk says which output it was.
    """
    target = Path(target)
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        name = {"dir": target.parent, "prefix": PARTIAL_PREFIX, "suffix": f"-{target.name}"}
        if directory:
            temporary = Path(tempfile.mkdtemp(**name))
        else:
            handle, file_name = tempfile.mkstemp(**name)
            os.close(handle)
            temporary = Path(file_name)
        yield temporary
        _replace(temporary, target)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(target)) from error
    finally:
        if temporary is not None and temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary is not None:
            temporary.unlink(missing_ok=True)


def _replace(temporary: Path, target: Path) -> None:
    if not target.is_dir() or target.is_symlink():
        os.replace(temporary, target)
        return
    retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=PARTIAL_PREFIX, suffix=f"-{target.name}.old"))
    try:
        os.replace(target, retired / target.name)
        try:
            os.replace(temporary, target)
        except OSError:
            os.replace(retired / target.name, target)  # the old one stays
            raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)


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
