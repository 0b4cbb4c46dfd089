"""advseg.jobs.atomic_path: an output appears whole or not at all, and a failed write names it."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from advseg.jobs import PARTIAL_PREFIX, atomic_path, read_json, read_npz, write_json, write_npz


def test_the_target_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "new" / "scores.json"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(PARTIAL_PREFIX)
        assert temporary.name.endswith("scores.json"), "writers that go by the suffix still work"
        temporary.write_text("{}")
        assert not target.exists()
    assert target.read_text() == "{}"
    assert [path.name for path in target.parent.iterdir()] == ["scores.json"]


def test_a_failed_block_keeps_the_old_target_and_leaves_nothing(tmp_path):
    target = tmp_path / "scores.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["scores.json"]


def test_an_os_error_names_the_target_not_the_temporary(tmp_path):
    target = tmp_path / "slices.npz"
    with pytest.raises(OSError) as error, atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/.partial-x-slices.npz")
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "old.npy").write_text("old")
    with atomic_path(target, directory=True) as temporary:
        assert temporary.is_dir() and not list(temporary.iterdir())
        (temporary / "new.npy").write_text("new")
    assert [path.name for path in target.iterdir()] == ["new.npy"]
    assert [path.name for path in tmp_path.iterdir()] == ["prepared"]
    with pytest.raises(RuntimeError), atomic_path(target, directory=True) as temporary:
        (temporary / "half.npy").write_text("half")
        raise RuntimeError("killed mid-write")
    assert [path.name for path in target.iterdir()] == ["new.npy"]
    assert [path.name for path in tmp_path.iterdir()] == ["prepared"]


def test_json_and_npz_writers_round_trip(tmp_path):
    write_json(tmp_path / "a.json", {"dice": 0.5})
    assert read_json(tmp_path / "a.json", ("dice",)) == {"dice": 0.5}
    assert json.loads((tmp_path / "a.json").read_text()) == {"dice": 0.5}
    write_npz(tmp_path / "eps_0.01.slices", {"dice": np.arange(3)})  # no .npz appended to the name
    assert read_npz(tmp_path / "eps_0.01.slices", ("dice",), "a test")["dice"].tolist() == [0, 1, 2]
