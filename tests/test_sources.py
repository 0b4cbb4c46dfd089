"""data.uwmadison.source: the competition's archive from Kaggle, a local .zip, or a folder.

The archive is written in the competition's exact layout (tests/byod_data.py); the Kaggle
client is real except for its one network call, ``KaggleApi.competition_download_files``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests

from advseg.datasets import prepare_dataset, sources
from advseg.datasets.slices import resize_slices, scale_by_max
from byod_data import CLASS_NAMES, SCANS, SLICES, write_competition_zip

ARCHIVE = f"{sources.COMPETITION}.zip"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("download") / ARCHIVE
    return path, write_competition_zip(path)


def leftovers(cache: Path) -> list[str]:
    """What a failed run left in the cache folder (nothing, if it cleaned up)."""
    return sorted(path.name for path in cache.iterdir()) if cache.exists() else []


def prepare_uwmadison(root: Path, size: int = 32):
    """The uwmadison loader on the extracted folder (the fixture has none of the study's excluded scans)."""
    return prepare_dataset("uwmadison", size, root=str(root), exclude=[])


def error_of(source, cache: Path) -> str:
    with pytest.raises(ValueError) as error:
        sources.resolve_source(source, cache)
    return str(error.value)


# --- a local archive ----------------------------------------------------------------------


def test_archive_extracts_to_a_folder_the_loader_reads(archive, tmp_path):
    path, truth = archive
    root = sources.resolve_source(str(path), tmp_path / "cache")
    assert root == tmp_path / "cache" / sources.COMPETITION
    assert (root / "train.csv").is_file() and not (root / "sample_submission.csv").exists()
    assert len(list(root.glob("train/*/*/scans/*.png"))) == len(SCANS) * len(SLICES)
    assert leftovers(tmp_path / "cache") == [sources.COMPETITION]  # no temporary folder left
    data = prepare_uwmadison(root)
    keys = sorted(truth)  # (case, day, slice) order, as the loader sorts
    assert data.class_names == CLASS_NAMES and len(data.images) == len(keys)
    for index, key in enumerate(keys):
        image, masks = truth[key]
        expected_image, expected_masks = resize_slices(image[None].astype(np.float32), masks[None], 32)
        assert np.allclose(data.images[index], scale_by_max(expected_image)[0], atol=1e-6), key
        assert np.array_equal(data.masks[index], expected_masks[0]), key
    assert data.groups.tolist() == [case for case, _, _ in keys]
    empty = [index for index, key in enumerate(keys) if key[2] == 3]
    assert not data.masks[empty].any() and data.masks[:, 1].any()  # empty slices and all three classes


def test_second_run_reuses_the_extraction(archive, tmp_path, monkeypatch):
    path, _ = archive
    root = sources.resolve_source(path, tmp_path)
    stamp = (root / "train.csv").stat().st_mtime_ns
    monkeypatch.setattr(sources, "archive_members", lambda path: pytest.fail("extracted twice"))
    assert sources.resolve_source(path, tmp_path) == root
    assert (root / "train.csv").stat().st_mtime_ns == stamp


def test_a_changed_archive_is_extracted_again(tmp_path):
    path = tmp_path / "data.zip"
    write_competition_zip(path)
    root = sources.resolve_source(path, tmp_path / "cache")
    (root / "train" / "marker-of-the-old-extraction").write_text("x")
    os.utime(path, ns=(1, 1))  # a new download of the same name
    assert sources.resolve_source(path, tmp_path / "cache") == root
    assert not (root / "train" / "marker-of-the-old-extraction").exists()
    assert leftovers(tmp_path / "cache") == ["data"]


def test_archive_with_a_folder_around_the_data(tmp_path):
    path = tmp_path / "repacked.zip"
    truth = write_competition_zip(path, prefix="uw-madison/")
    root = sources.resolve_source(path, tmp_path / "cache")
    assert len(prepare_uwmadison(root).images) == len(truth)


def test_folder_source_is_used_as_it_is(archive, tmp_path):
    root = sources.resolve_source(archive[0], tmp_path / "cache")
    assert sources.resolve_source(str(root), tmp_path / "other") == root
    assert not (tmp_path / "other").exists()
    message = error_of(tmp_path, tmp_path / "other")
    assert str(tmp_path) in message and "train.csv and train/" in message


def test_wrong_path(tmp_path):
    message = error_of(tmp_path / "nowhere.zip", tmp_path / "cache")
    assert "data.uwmadison.source" in message and str(tmp_path / "nowhere.zip") in message
    assert "data.uwmadison.source: not set" in error_of(None, tmp_path / "cache")


def test_not_the_competitions_archive(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images/a.png", b"x")
    message = error_of(path, tmp_path / "cache")
    assert str(path) in message and "not the uw-madison-gi-tract-image-segmentation archive" in message
    assert leftovers(tmp_path / "cache") == []


def test_train_csv_of_another_competition(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.csv", "image_id,label\n")
        archive.writestr("train/case1/case1_day0/scans/slice_0001_4_4_1.50_1.50.png", b"x")
    message = error_of(path, tmp_path / "cache")
    assert str(path) in message and "columns image_id,label" in message


def test_not_a_zip(tmp_path):
    path = tmp_path / "data.zip"
    path.write_bytes(b"<html>Please sign in</html>")
    message = error_of(path, tmp_path / "cache")
    assert str(path) in message and "not a readable zip archive" in message


def test_truncated_archive(archive, tmp_path):
    path = tmp_path / "cut.zip"
    path.write_bytes(archive[0].read_bytes()[: archive[0].stat().st_size // 2])
    assert str(path) in error_of(path, tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []


def test_corrupt_member_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "corrupt.zip"
    write_competition_zip(path)
    with zipfile.ZipFile(path) as archive:
        info = [item for item in archive.infolist() if item.filename.endswith(".png")][-1]
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF  # a flipped byte in the last slice's data
    path.write_bytes(bytes(raw))
    message = error_of(path, tmp_path / "cache")
    assert str(path) in message and "extraction failed" in message
    assert leftovers(tmp_path / "cache") == []


def test_not_enough_disk(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(sources.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10})())
    message = error_of(archive[0], tmp_path / "cache")
    assert str(archive[0]) in message and "GB free" in message


def test_stale_partial_folders_of_killed_runs_are_removed(archive, tmp_path):
    cache = tmp_path / "cache"
    (cache / ".partial-999999999-abc" / "train").mkdir(parents=True)  # no such process
    mine = cache / f".partial-{os.getpid()}-live"                       # a running process
    mine.mkdir()
    sources.resolve_source(archive[0], cache)
    assert leftovers(cache) == [mine.name, sources.COMPETITION]


# --- Kaggle ---------------------------------------------------------------------------------


class FakeKaggle:
    """The home folder, what the fake network call was asked, and what it does (``answer(target zip)``)."""

    def __init__(self, home: Path):
        self.home, self.calls = home, []
        self.answer = lambda target: pytest.fail("no download expected")


@pytest.fixture
def kaggle(tmp_path, monkeypatch) -> FakeKaggle:
    """A home without Kaggle credentials; the client's one network call is faked."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "KAGGLE_API_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    from kaggle.api.kaggle_api_extended import KaggleApi

    fake = FakeKaggle(home)

    def download(self, competition, path=None, force=False, quiet=True, unzip=False):
        fake.calls.append((competition, self.config_values.get("username")))
        return fake.answer(Path(path) / f"{competition}.zip")

    monkeypatch.setattr(KaggleApi, "competition_download_files", download)
    return fake


def with_env_credentials(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "researcher")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")


def test_kaggle_without_credentials(kaggle, tmp_path):
    message = error_of("kaggle", tmp_path / "cache")
    assert "kaggle.json" in message and str(kaggle.home) in message  # where the file should go
    assert "KAGGLE_USERNAME" in message and "KAGGLE_KEY" in message and f"{sources.COMPETITION}.zip" in message
    assert kaggle.calls == [] and leftovers(tmp_path / "cache") == []


def test_kaggle_json_without_a_key(kaggle, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "conf"))
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "kaggle.json").write_text(json.dumps({"username": "someone"}))
    assert str(tmp_path / "conf" / "kaggle.json") in error_of("kaggle", tmp_path / "cache")
    (tmp_path / "conf" / "kaggle.json").write_text("{not json")
    assert str(tmp_path / "conf" / "kaggle.json") in error_of("kaggle", tmp_path / "cache")


def test_kaggle_downloads_extracts_and_deletes_the_archive(kaggle, archive, tmp_path, monkeypatch):
    with_env_credentials(monkeypatch)
    kaggle.answer = lambda target: target.write_bytes(archive[0].read_bytes())
    cache = tmp_path / "cache"
    root = sources.resolve_source("kaggle", cache)
    assert root == cache / sources.COMPETITION
    assert kaggle.calls == [(sources.COMPETITION, "researcher")]
    assert leftovers(cache) == [sources.COMPETITION]  # the downloaded .zip is gone
    assert len(prepare_uwmadison(root).images) == len(archive[1])
    kaggle.answer = lambda target: pytest.fail("downloaded twice")
    assert sources.resolve_source("kaggle", cache) == root


def test_kaggle_json_in_the_home_folder(kaggle, archive, tmp_path):
    (kaggle.home / ".kaggle").mkdir()
    (kaggle.home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "from-file", "key": "k"}))
    kaggle.answer = lambda target: target.write_bytes(archive[0].read_bytes())
    sources.resolve_source("kaggle", tmp_path / "cache")
    assert kaggle.calls == [(sources.COMPETITION, "from-file")]


def http_error(status: int) -> requests.exceptions.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.exceptions.HTTPError(f"{status} Client Error", response=response)


@pytest.mark.parametrize(("failure", "expected"), [
    (http_error(403), "accept the competition rules at " + sources.RULES_URL),
    (http_error(401), "rejected the credentials (HTTP 401)"),
    (http_error(500), "HTTP 500"),
    (requests.exceptions.ConnectionError("Name or service not known"), "cannot reach kaggle.com"),
])
def test_kaggle_failures_say_what_to_do_and_leave_nothing(kaggle, tmp_path, monkeypatch, failure, expected):
    with_env_credentials(monkeypatch)

    def fail_half_way(target: Path):
        target.write_bytes(b"PK\x03\x04 the first bytes of a download")
        raise failure

    kaggle.answer = fail_half_way
    message = error_of("kaggle", tmp_path / "cache")
    assert message.startswith("data.uwmadison.source: ") and expected in message
    assert leftovers(tmp_path / "cache") == []


def test_kaggle_download_that_is_not_the_archive(kaggle, tmp_path, monkeypatch):
    with_env_credentials(monkeypatch)
    kaggle.answer = lambda target: target.write_bytes(b"not a zip")
    assert "not a readable zip archive" in error_of("kaggle", tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []
