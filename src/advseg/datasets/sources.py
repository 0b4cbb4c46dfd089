"""Where the study's data comes from (``data.uwmadison.source``), made into a folder.

``source`` is one of

* ``kaggle``: the competition's archive is downloaded with the ``kaggle`` package
  (credentials from ``~/.kaggle/kaggle.json``, ``KAGGLE_USERNAME``/``KAGGLE_KEY``, or the
  newer ``KAGGLE_API_TOKEN``/``~/.kaggle/access_token``; the account must have accepted
  the competition rules), then extracted;
* a path to that archive (``uw-madison-gi-tract-image-segmentation.zip``), extracted;
* a folder that already holds ``train.csv`` and ``train/`` (used as it is).

Archives are extracted once into ``cache_dir/<archive name>/`` (only ``train.csv`` and the
slice PNGs, about 2.5 GB for the full data), through a temporary folder that is renamed
into place when complete, so an interrupted run leaves nothing that looks finished. A
marker file records which archive the folder came from; a changed archive is extracted
again. The downloaded archive is deleted once extracted. Each failure is one ValueError
that says what to do.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

COMPETITION = "uw-madison-gi-tract-image-segmentation"
RULES_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"
KEY = "data.uwmadison.source"
MARKER = ".advseg-source.json"
MANUAL = (f"or download {COMPETITION}.zip in a browser ({RULES_URL.rsplit('/', 1)[0]}/data) and set "
          f"{KEY} to its path")
MEMBER = re.compile(r"train\.csv|train/case\d+/case\d+_day\d+/scans/slice_\d+_\d+_\d+_[\d.]+_[\d.]+\.png")
HEADER = ("id", "class", "segmentation")


def resolve_source(source: str | Path, cache_dir: str | Path) -> Path:
    """The folder holding train.csv and train/ that ``source`` stands for."""
    if source is None or str(source).strip() == "":
        raise ValueError(f"{KEY}: not set; use kaggle, the path of {COMPETITION}.zip, or the folder it was "
                         "extracted to")
    if str(source) == "kaggle":
        return download_from_kaggle(Path(cache_dir))
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "train.csv").is_file() or not (path / "train").is_dir():
            raise ValueError(f"{KEY}: folder {path} does not hold train.csv and train/ (the competition's "
                             "archive extracted); point it at that folder, the .zip itself, or use kaggle")
        return path
    if path.is_file():
        return extract_archive(path, Path(cache_dir))
    raise ValueError(f"{KEY}: {str(source)!r} is neither kaggle nor an existing .zip file or folder")


# --- archives -------------------------------------------------------------------------------


def archive_members(path: Path) -> tuple[str, list[zipfile.ZipInfo]]:
    """(prefix, members to extract) of the competition's archive, checked before anything is written."""
    not_it = (f"{path}: not the {COMPETITION} archive (expected train.csv and "
              "train/caseN/caseN_dayM/scans/slice_*.png inside)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path}: not a readable zip archive ({error}); download it again, {MANUAL}") from None
    with archive:
        names = [info.filename for info in archive.infolist()]
        tables = sorted((name for name in names if name.rsplit("/", 1)[-1] == "train.csv"), key=len)
        if not tables:
            raise ValueError(f"{not_it}: it has no train.csv")
        prefix = tables[0][: -len("train.csv")]  # the archive may hold one folder around the data
        members = [info for info in archive.infolist()
                   if info.filename.startswith(prefix) and MEMBER.fullmatch(info.filename[len(prefix):])]
        if not any(info.filename.endswith(".png") for info in members):
            raise ValueError(f"{not_it}: it has no slice PNGs")
        try:
            with archive.open(tables[0]) as handle:
                header = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8")), [])
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: {tables[0]} is unreadable ({error}); download the archive again") from None
        if tuple(header) != HEADER:
            raise ValueError(f"{not_it}: its train.csv has columns {','.join(header)}, expected {','.join(HEADER)}")
    return prefix, members


def fingerprint(path: Path) -> dict:
    status = path.stat()
    return {"archive": str(path.resolve()), "bytes": status.st_size, "mtime_ns": status.st_mtime_ns}


def extracted_folder(cache_dir: Path, name: str) -> Path:
    return cache_dir / name


def is_complete(folder: Path, expected: dict) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()) == expected
    except (OSError, ValueError):
        return False


def remove_stale_partials(cache_dir: Path) -> None:
    """Temporary folders of killed runs (their process is gone) are removed."""
    for folder in cache_dir.glob(".partial-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_folder(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(cache_dir)
    return Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-", dir=cache_dir))


def extract_archive(path: Path, cache_dir: Path, marker: dict | None = None, name: str | None = None) -> Path:
    """Extract train.csv and the slices once into cache_dir/<name>; reuse a complete earlier extraction."""
    marker = marker or fingerprint(path)
    target = extracted_folder(cache_dir, name or path.name.removesuffix(".zip"))
    if is_complete(target, marker):
        return target
    prefix, members = archive_members(path)
    needed = sum(info.file_size for info in members)
    cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir).free
    if needed > free:
        raise ValueError(f"{path}: extracting needs {needed / 1e9:.2f} GB in {cache_dir}, only {free / 1e9:.2f} GB "
                         "free; free some space or extract it elsewhere and set the source to that folder")
    partial = partial_folder(cache_dir)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in members:  # names match MEMBER, so nothing lands outside the folder
                destination = partial / info.filename[len(prefix):]
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
        (partial / MARKER).write_text(json.dumps(marker))
        install(partial, target)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: extraction failed ({type(error).__name__}: {error}); the archive may be "
                         f"truncated: download it again, {MANUAL}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def install(partial: Path, target: Path) -> None:
    """Put a complete folder in place of target, atomically for readers of target."""
    if target.exists():
        retired = target.with_name(f".retired-{os.getpid()}-{target.name}")
        target.rename(retired)
        partial.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        partial.rename(target)


# --- Kaggle ---------------------------------------------------------------------------------


def kaggle_config_dir() -> Path:
    """Where the kaggle client looks for kaggle.json (its own rules)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy if legacy.exists() or not xdg.exists() else xdg


def kaggle_credentials() -> Path | None:
    """The kaggle.json to use (None: the environment or an access token); a ValueError when there are none."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return None
    if os.environ.get("KAGGLE_API_TOKEN") or any(
            (Path.home() / ".kaggle" / name).is_file() for name in ("access_token", "access_token.txt")):
        return None  # the newer API tokens; the client checks them with kaggle.com
    config = kaggle_config_dir() / "kaggle.json"
    try:
        values = json.loads(config.read_text())
    except FileNotFoundError:
        values = None
    except (OSError, ValueError) as error:
        raise ValueError(f"{config}: unreadable Kaggle credentials ({error}); download a new kaggle.json from "
                         "https://www.kaggle.com/settings (API, Create New Token)") from None
    if isinstance(values, dict) and values.get("username") and values.get("key"):
        return config
    raise ValueError(f"{KEY}: kaggle needs Kaggle API credentials: save kaggle.json from https://www.kaggle.com/"
                     f"settings (API, Create New Token) as {config} (chmod 600), or set KAGGLE_USERNAME and "
                     f"KAGGLE_KEY (or KAGGLE_API_TOKEN); {MANUAL}")


def download_from_kaggle(cache_dir: Path) -> Path:
    """Download the competition's archive (once) and extract it into cache_dir/<competition>."""
    target = extracted_folder(cache_dir, COMPETITION)
    if is_complete(target, {"archive": "kaggle", "competition": COMPETITION}):
        return target
    config = kaggle_credentials()
    import requests
    from kaggle.api.kaggle_api_extended import KaggleApi

    credentials = config or "KAGGLE_USERNAME/KAGGLE_KEY or the API token"
    api = KaggleApi()
    if config is not None:  # the client fixes its config path at import; point it at the file found
        api.config_dir, api.config = str(config.parent), str(config)
    download = partial_folder(cache_dir)
    try:
        try:
            api.authenticate()
        except SystemExit:  # the client prints its help and exits when nothing works
            raise ValueError(f"{KEY}: the Kaggle client found no usable credentials in {credentials}; "
                             f"{MANUAL}") from None
        api.competition_download_files(COMPETITION, path=str(download), quiet=True)
        archives = sorted(download.glob("*.zip"))
        if not archives:
            raise ValueError(f"{KEY}: the Kaggle download of {COMPETITION} gave no .zip archive; {MANUAL}")
        return extract_archive(archives[0], cache_dir, marker={"archive": "kaggle", "competition": COMPETITION},
                               name=COMPETITION)
    except requests.exceptions.HTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status == 403:
            raise ValueError(f"{KEY}: Kaggle refused the download (HTTP 403): accept the competition rules at "
                             f"{RULES_URL} with the account of these credentials, then run again") from None
        if status == 401:
            raise ValueError(f"{KEY}: Kaggle rejected the credentials (HTTP 401) in {credentials}: create a new "
                             "token at https://www.kaggle.com/settings") from None
        raise ValueError(f"{KEY}: the Kaggle download failed (HTTP {status}: {error}); {MANUAL}") from None
    except (requests.exceptions.RequestException, OSError) as error:
        raise ValueError(f"{KEY}: cannot reach kaggle.com ({type(error).__name__}: {error}); connect this machine "
                         f"to the internet, {MANUAL}") from None
    finally:
        shutil.rmtree(download, ignore_errors=True)
