"""The fault matrix: every corrupt or missing input, a kill -9 at each stage, a full disk, a
read-only results folder and a deleted MLflow store, each through the real ``advseg`` commands.

Each test asserts what the user sees (a non-zero exit and one line ``advseg <step>: error:``
naming the file and what to do, no traceback) and what is left on disk (no partial file under
a name a later run would trust; a rerun equal to an uninterrupted run).

A fresh ``advseg`` process spends 5-10 s importing torch, smp and MLflow, so the commands run
in processes forked from one *launcher* that has imported them once (``serve`` below, this
file run as a script): each command is still a process of its own with its own exit code,
stdout and stderr, calling ``advseg.cli.main`` exactly as the ``advseg`` script does. A few
rows use the ``advseg`` script itself (``run_script``), and one goes through Snakemake.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from advseg.jobs import PARTIAL_PREFIX

pytestmark = pytest.mark.slow  # every advseg command, killed and rerun

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIZE = 32
EPSILONS = ["0.01", "0.05"]
DATA_SETTINGS = {"name": "mni152", "image_size": SIZE, "folds": 10, "folds_to_run": [0], "guard": 2}
TRAINING = {"epochs": 1, "batch_size": 16, "amp": False, "augment": False}
ATTACK = {"method": "fgsm", "step": "standard", "loss_argument_order": "standard", "input": "grey"}
REPORT = {"correlation_eps": float(EPSILONS[-1]), "transfer_eps": float(EPSILONS[-1])}   # the rest: the schema's
TABLES = ("attack_summary.csv", "attack_summary_replicates.csv", "attack_losses.md", "attack_losses.csv",
          "ablation.md", "size.csv", "size.md", "claims.md", "robustness.csv", "robustness.md", "certified.csv",
          "certified.md", "transfer.csv", "sanity.md", "sanity.csv")
PLOTS = ("correlation.png", "dice.png", "loss.png", "transfer.png", "tradeoff.png", "certified.png")


# --- the launcher: one process that imported everything, forking one process per command -----------------------

def _drop_dac_override() -> None:
    """Take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH away: root then obeys permission bits like any user."""
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF
    data[0].effective &= keep
    data[0].permitted &= keep
    data[0].inheritable &= keep
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _mount_tmpfs(path: str, size: str) -> None:
    """A tiny tmpfs at ``path``, in a mount namespace of this process alone: a disk that fills up."""
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private = 0x00020000, 0x4000, 0x40000
    if libc.unshare(clone_newns) != 0 or libc.mount(b"none", b"/", None, ms_rec | ms_private, None) != 0 \
            or libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, f"size={size}".encode()) != 0:
        raise OSError(ctypes.get_errno(), "mount tmpfs")


def _readable_files(directory: Path) -> dict[str, bool]:
    """Every file under ``directory``: whether it opens as what its name says."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            try:
                if path.suffix == ".json":
                    json.loads(path.read_text())
                elif path.suffix == ".npz":
                    with np.load(path) as archive:
                        [archive[key] for key in archive.files]
                found[str(path.relative_to(directory))] = True
            except Exception:  # noqa: BLE001
                found[str(path.relative_to(directory))] = False
    return found


def can_mount_tmpfs() -> bool:
    """Root with CAP_SYS_ADMIN (as here): tried in a throwaway child."""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:
        try:
            _mount_tmpfs("/mnt" if os.path.isdir("/mnt") else "/tmp", "16k")
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _limits(fsize: int | None, read_only_user: bool):
    """What a child applies to itself before the command: a file-size limit, no root override of permissions."""
    def apply() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if read_only_user and os.geteuid() == 0:
            _drop_dac_override()
    return apply


def _child(request: dict, out_w: int, err_w: int) -> None:
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    code = 99
    try:
        os.chdir(request.get("cwd") or os.getcwd())
        os.environ.update(request.get("env") or {})
        _limits(request.get("fsize"), request.get("read_only_user", False))()
        kill_at = request.get("kill_at")
        if kill_at:  # kill -9 at the moment the n-th matching output would be renamed into place
            real_replace, seen = os.replace, []

            def replace(src, dst, *args, **kwargs):
                if str(dst).endswith(kill_at["suffix"]):
                    seen.append(dst)
                    if len(seen) == kill_at.get("nth", 1):
                        os.kill(os.getpid(), signal.SIGKILL)
                return real_replace(src, dst, *args, **kwargs)

            os.replace = replace
        if request.get("tmpfs"):
            _mount_tmpfs(request["tmpfs"], request["tmpfs_size"])
        from advseg.cli import main

        code = main(request["argv"])
        if request.get("tmpfs"):  # the file system goes with this process: say what it holds now
            print(json.dumps(_readable_files(Path(request["tmpfs"]))))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException:  # noqa: BLE001 - the launcher's own failure, shown to the test
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Read one JSON request per line on stdin; run it in a forked child; answer rc, stdout, stderr."""
    import logging  # noqa: F401

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import mlflow  # noqa: F401
    import pandas  # noqa: F401
    import PIL.Image  # noqa: F401
    import segmentation_models_pytorch  # noqa: F401
    import torch  # noqa: F401
    from mlflow import MlflowClient  # noqa: F401
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401

    import advseg.cli  # noqa: F401
    for name in ("attacks", "checkpoints", "training", "tracking", "report.claims", "report.plots", "records",
                 "inference", "metrics", "losses", "models", "datasets.mni152", "datasets.uwmadison",
                 "commands.download", "commands.tracking", "commands.train", "commands.checkpoint",
                 "commands.attack", "commands.transfer", "commands.aggregate"):
        __import__(f"advseg.{name}")
    import nibabel  # noqa: F401
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints must not corrupt the protocol
    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(out_r)
            os.close(err_r)
            protocol.close()
            _child(request, out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        chunks = {out_r: [], err_r: []}
        selector = selectors.DefaultSelector()
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        protocol.write(json.dumps({"rc": rc, "stdout": b"".join(chunks[out_r]).decode(errors="replace"),
                                   "stderr": b"".join(chunks[err_r]).decode(errors="replace")}) + "\n")
        protocol.flush()


class Result:
    def __init__(self, rc: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = rc, stdout, stderr

    def __repr__(self) -> str:
        return f"rc={self.returncode}\n--- stderr ---\n{self.stderr[-4000:]}"


class Launcher:
    def __init__(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ADVSEG_DEBUG": ""}
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        assert self.process.stdout.readline().strip() == "ready", "the launcher did not start"

    def __call__(self, *argv: str, cwd: Path | None = None, fsize: int | None = None,
                 read_only_user: bool = False, kill_at: dict | None = None, tmpfs: Path | None = None,
                 tmpfs_size: str = "16k") -> Result:
        request = {"argv": [str(arg) for arg in argv], "cwd": str(cwd) if cwd else None, "fsize": fsize,
                   "read_only_user": read_only_user, "kill_at": kill_at, "tmpfs": str(tmpfs) if tmpfs else None,
                   "tmpfs_size": tmpfs_size}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return Result(answer["rc"], answer["stdout"], answer["stderr"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def run_script(*argv: str, fsize: int | None = None, read_only_user: bool = False,
               timeout: int = 120) -> subprocess.CompletedProcess:
    """The installed ``advseg`` script in a process of its own (limits applied in preexec_fn)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("ADVSEG_DEBUG", None)
    return subprocess.run([str(BIN / "advseg"), *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=timeout, preexec_fn=_limits(fsize, read_only_user))


# --- what the user sees ----------------------------------------------------------------------------------------

def assert_one_line_error(result, step: str, *names: str) -> str:
    """Non-zero exit; no traceback; exactly one 'advseg <step>: error:' line, the last, naming ``names``."""
    assert result.returncode not in (0, 99) and result.returncode > 0, result
    assert "Traceback" not in result.stderr, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"advseg {step}: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result
    assert "unexpected" not in errors[0], result
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def is_partial(name: str) -> bool:
    """A temporary file of advseg.jobs.atomic_path, left by a killed job."""
    return Path(name).name.startswith(PARTIAL_PREFIX)


def files_under(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in Path(directory).rglob("*") if path.is_file())


# --- the inputs: one uninterrupted pipeline, built once ---------------------------------------------------------

@pytest.fixture(scope="module")
def advseg():
    launcher = Launcher()
    yield launcher
    launcher.close()


def train_args(base: Path, data: Path, out: Path) -> list:
    return ["train", "--data", data, "--fold", 0, "--tracking", base / "mlflow/tracking.json", "--arch", "Unet",
            "--encoder", "resnet18", "--seed", 0, "--settings", json.dumps(TRAINING),
            "--weights", out / "best.safetensors", "--history", out / "history.json",
            "--resume-state", out / "resume.pt"]


def checkpoint_args(base: Path, out: Path, data: Path | None = None, weights: Path | None = None) -> list:
    return ["checkpoint", "--data", data or base / "data", "--fold", 0, "--tracking", base / "mlflow/tracking.json",
            "--name", "Unet-resnet18", "--seed", 0, "--weights", weights or base / "train/best.safetensors",
            "--history", base / "train/history.json", "--model-out", out / "model.safetensors",
            "--card-out", out / "model_card.json"]


def attack_args(base: Path, out: Path, model: Path | None = None, card: Path | None = None,
                data: Path | None = None, tracking: Path | None = None, loss: str = "bce") -> list:
    return ["attack", "--model", model or base / "model.safetensors", "--card", card or base / "model_card.json",
            "--data", data or base / "data", "--fold", 0, "--tracking", tracking or base / "mlflow/tracking.json",
            "--loss", loss, "--settings", json.dumps(ATTACK), "--epsilons", *EPSILONS,
            "--transfer-eps", EPSILONS[-1], "--out-dir", out]


def aggregate_args(base: Path, out: Path, attacks: Path | None = None) -> list:
    attacks = attacks or base / "attack"
    flags = {"attack_summary.csv": "--summary-csv", "attack_summary_replicates.csv": "--replicates-csv",
             "attack_losses.md": "--losses-md", "attack_losses.csv": "--losses-csv", "ablation.md": "--ablation-md",
             "size.csv": "--size-csv", "size.md": "--size-md", "claims.md": "--claims-md",
             "robustness.csv": "--robustness-csv", "robustness.md": "--robustness-md",
             "certified.csv": "--certified-csv", "certified.md": "--certified-md",
             "transfer.csv": "--transfer-csv", "sanity.md": "--sanity-md", "sanity.csv": "--sanity-csv"}
    argv = ["aggregate", "--tracking", base / "mlflow/tracking.json", "--settings", json.dumps(REPORT),
            "--training-loss", "dicefocal",
            "--attacks", *[attacks / loss / f"eps_{eps}.json" for loss in ("bce", "dicefocal") for eps in EPSILONS],
            "--examples", *[attacks / loss / f"eps_{EPSILONS[-1]}.example.npz" for loss in ("bce", "dicefocal")],
            "--cards", base / "model_card.json"]
    for name in TABLES:
        argv += [flags[name], out / "tables" / name]
    for flag, name in zip(("--size-plot", "--dice-plot", "--loss-plot", "--transfer-plot", "--tradeoff-plot",
                           "--certified-plot"), PLOTS):
        argv += [flag, out / "plots" / name]
    return argv + ["--examples-dir", out / "plots/examples", "--run-record", out / "aggregate_run.json"]


@pytest.fixture(scope="module")
def base(advseg, tmp_path_factory) -> Path:
    """download -> tracking -> train (1 epoch) -> checkpoint -> attack (2 losses x 2 eps) -> aggregate."""
    base = tmp_path_factory.mktemp("base")
    steps = [
        ["download", "--settings", json.dumps(DATA_SETTINGS), "--out", base / "data"],
        ["tracking", "--tracking-uri", f"sqlite:///{base / 'mlflow.db'}", "--experiment", "faults",
         "--artifact-dir", base / "mlflow/artifacts", "--out", base / "mlflow/tracking.json"],
        train_args(base, base / "data", base / "train"),
        checkpoint_args(base, base),
        attack_args(base, base / "attack/bce", loss="bce"),
        attack_args(base, base / "attack/dicefocal", loss="dicefocal"),
        aggregate_args(base, base),
    ]
    for argv in steps:
        result = advseg(*argv)
        assert result.returncode == 0, (argv[0], result)
    return base


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    return target


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def same_json(left: Path, right: Path, ignore: tuple[str, ...] = ()) -> bool:
    a, b = (json.loads(Path(path).read_text()) for path in (left, right))
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def same_npz(left: Path, right: Path) -> bool:
    with np.load(left) as a, np.load(right) as b:
        return sorted(a.files) == sorted(b.files) and all(np.array_equal(a[key], b[key]) for key in a.files)


# --- the prepared data directory ----------------------------------------------------------------------------------

def test_prepared_data_missing_file(advseg, base, tmp_path):
    data = copy(base / "data", tmp_path / "data")
    (data / "masks.npy").unlink()
    result = advseg(*attack_args(base, tmp_path / "out", data=data))
    assert_one_line_error(result, "attack", data / "masks.npy", "advseg download")
    assert not (tmp_path / "out").exists()


def test_prepared_data_truncated_npy(advseg, base, tmp_path):
    data = copy(base / "data", tmp_path / "data")
    truncate(data / "fold_0" / "val_images.npy")
    out = tmp_path / "train"
    result = advseg(*train_args(base, data, out))
    assert_one_line_error(result, "train", data / "fold_0" / "val_images.npy", "truncated", "advseg download")
    assert not out.exists() or files_under(out) == []


@pytest.mark.parametrize("damage", ["not JSON", "lacks a key", "other format"])
def test_prepared_data_wrong_prepared_json(advseg, base, tmp_path, damage):
    data = copy(base / "data", tmp_path / "data")
    meta_path = data / "prepared.json"
    meta = json.loads(meta_path.read_text())
    if damage == "not JSON":
        truncate(meta_path)
    elif damage == "lacks a key":
        del meta["fold_splits"]
        meta_path.write_text(json.dumps(meta))
    else:
        meta_path.write_text(json.dumps({**meta, "format": 99}))
    result = advseg(*checkpoint_args(base, tmp_path, data=data))
    assert_one_line_error(result, "checkpoint", meta_path, "advseg download")
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "model_card.json").exists()


# --- the checkpoint and its model card ----------------------------------------------------------------------------

@pytest.mark.parametrize("damage, says", [("truncated", "safetensors"), ("not safetensors", "safetensors"),
                                          ("other arch", "FPN")])
def test_checkpoint_unusable(advseg, base, tmp_path, damage, says):
    model, card = copy(base / "model.safetensors", tmp_path / "model.safetensors"), tmp_path / "model_card.json"
    card_data = json.loads((base / "model_card.json").read_text())
    if damage == "truncated":
        truncate(model)
    elif damage == "not safetensors":
        model.write_bytes(b"\x80\x04PK not a checkpoint" * 100)
    else:  # weights of a Unet named by a card that says FPN: a checkpoint of another architecture
        card_data["arch"] = "FPN"
    card.write_text(json.dumps(card_data))
    result = advseg(*attack_args(base, tmp_path / "out", model=model, card=card))
    assert_one_line_error(result, "attack", model, says, "rerun the workflow")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["bad JSON", "missing key"])
def test_model_card_unusable(advseg, base, tmp_path, damage):
    card = copy(base / "model_card.json", tmp_path / "model_card.json")
    if damage == "bad JSON":
        truncate(card)
        expected = ("JSON",)
    else:
        card.write_text(json.dumps({k: v for k, v in json.loads(card.read_text()).items() if k != "class_names"}))
        expected = ("class_names",)
    result = advseg(*attack_args(base, tmp_path / "out", card=card))
    line = assert_one_line_error(result, "attack", card, *expected)
    assert "rerun" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, says", [("unknown defense", "defense: unknown value 'armour'"),
                                          ("bad settings", "defense.smoothing.sigma")])
def test_defended_model_card_unusable(advseg, base, tmp_path, damage, says):
    card_data = json.loads((base / "model_card.json").read_text())
    card_data.update({"defense": "armour"} if damage == "unknown defense" else
                     {"defense": "smoothing", "defense_settings": {"sigma": -1}})
    card = tmp_path / "model_card.json"
    card.write_text(json.dumps(card_data))
    result = advseg(*attack_args(base, tmp_path / "out", card=card))
    assert_one_line_error(result, "attack", card, says, "rerun the workflow")
    assert not (tmp_path / "out").exists()


# --- attack results read by aggregate, perturbations read by transfer ----------------------------------------------

@pytest.mark.parametrize("kind", ["json", "slices.npz", "example.npz"])
def test_attack_result_truncated(advseg, base, tmp_path, kind):
    attacks = copy(base / "attack", tmp_path / "attack")
    damaged = attacks / "dicefocal" / f"eps_0.05.{kind}"
    truncate(damaged)
    out = tmp_path / "out"
    result = advseg(*aggregate_args(base, out, attacks=attacks))
    line = assert_one_line_error(result, "aggregate", damaged)
    assert "rerun" in line
    assert not out.exists()


def transfer(advseg, base: Path, listed, out: Path):
    """`advseg transfer` on the base model with ``listed`` (paths, or any JSON) as its perturbation list."""
    perturbation_list = out.with_name("perturbations.json")
    perturbation_list.write_text(json.dumps([str(path) for path in listed] if isinstance(listed, list) else listed))
    return advseg("transfer", "--model", base / "model.safetensors", "--card", base / "model_card.json",
                  "--data", base / "data", "--fold", 0, "--perturbation-list", perturbation_list, "--out", out)


def test_transfer_perturbation_truncated(advseg, base, tmp_path):
    damaged = copy(base / "attack/bce/transfer.npz", tmp_path / "transfer.npz")
    truncate(damaged)
    out = tmp_path / "transfer.json"
    assert_one_line_error(transfer(advseg, base, [damaged], out), "transfer", damaged, "rerun")
    assert not out.exists()


def test_transfer_perturbation_list_that_is_no_list(advseg, base, tmp_path):
    out = tmp_path / "transfer.json"
    result = transfer(advseg, base, {"transfer.npz": 1}, out)
    assert_one_line_error(result, "transfer", tmp_path / "perturbations.json", "rerun")
    assert not out.exists()


def test_transfer_skips_the_targets_own_perturbations(advseg, base, tmp_path):
    out = tmp_path / "transfer.json"
    result = transfer(advseg, base, [base / "attack/bce/transfer.npz"], out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(out.read_text()) == [], "a model's own perturbations are white-box, not transferred"


# --- resume state ---------------------------------------------------------------------------------------------------

def test_corrupt_resume_state_starts_over(advseg, base, tmp_path):
    out = tmp_path / "train"
    out.mkdir()
    (out / "resume.pt").write_bytes(b"PK\x03\x04 half a torch.save" * 50)
    result = advseg(*train_args(base, base / "data", out))
    assert result.returncode == 0, result
    assert "unreadable resume state" in result.stderr and "starting over" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "resume.pt").exists()
    assert same_json(out / "history.json", base / "train/history.json", ignore=("seconds", "mlflow_run_id", "epochs"))
    assert (out / "best.safetensors").read_bytes() == (base / "train/best.safetensors").read_bytes()


# --- UW-Madison source files ----------------------------------------------------------------------------------------

@pytest.fixture
def uw_root(tmp_path):
    from test_uwmadison import build_root

    build_root(tmp_path / "uw")
    return tmp_path / "uw"


def uw_download(advseg, root: Path, out: Path):
    settings = {"name": "uwmadison", "image_size": SIZE, "folds": 3, "folds_to_run": [0],
                "uwmadison": {"root": str(root)}}
    return advseg("download", "--settings", json.dumps(settings), "--out", out)


def test_uwmadison_bad_train_csv_row(advseg, uw_root, tmp_path):
    csv_path = uw_root / "train.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:3] + ["case12_slice_0001,stomach,"] + lines[3:]) + "\n")
    result = uw_download(advseg, uw_root, tmp_path / "data")
    assert_one_line_error(result, "download", csv_path, "line 4", "case12_slice_0001", "download and unzip")
    assert not (tmp_path / "data").exists()


def test_uwmadison_truncated_png(advseg, uw_root, tmp_path):
    from test_uwmadison import png_path

    png = png_path(uw_root, 12, 0, 2, 20, 14)
    truncate(png, 0.6)
    result = uw_download(advseg, uw_root, tmp_path / "data")
    assert_one_line_error(result, "download", png, "download and unzip")
    assert not (tmp_path / "data").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_uwmadison_rle_past_the_image(advseg, uw_root, tmp_path):
    csv_path = uw_root / "train.csv"
    lines = [line for line in csv_path.read_text().splitlines()
             if not line.startswith("case12_day0_slice_0005,stomach,")]
    csv_path.write_text("\n".join(lines + ["case12_day0_slice_0005,stomach,270 20"]) + "\n")  # 280 pixels
    result = uw_download(advseg, uw_root, tmp_path / "data")
    assert_one_line_error(result, "download", csv_path, "case12_day0_slice_0005", "run-length code", "beyond",
                          "download and unzip")
    assert not (tmp_path / "data").exists()


# --- full disk, read-only results, deleted MLflow store -------------------------------------------------------------

def test_full_disk_during_download(tmp_path):
    """The advseg script itself, under a file-size limit (the portable stand-in for a full disk)."""
    out = tmp_path / "results" / "data" / "mni152"
    result = run_script("download", "--settings", json.dumps(DATA_SETTINGS), "--out", out, fsize=200_000)
    line = assert_one_line_error(result, "download", out)
    assert "File too large" in line and ("free disk space" in line or "raise it" in line)
    assert not out.exists() and not list(out.parent.iterdir()), "no partial prepared directory is left"


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs root with CAP_SYS_ADMIN to mount a tiny tmpfs")
def test_full_disk_during_attack(advseg, base, tmp_path):
    """A real full disk (ENOSPC): the attack writes its results onto a 16 KiB tmpfs."""
    results = tmp_path / "results"
    results.mkdir()
    out = results / "attack"
    result = advseg(*attack_args(base, out), tmpfs=results, tmpfs_size="16k")
    line = assert_one_line_error(result, "attack", out, "No space left on device", "free disk space")
    failed = Path(re.search(r"error: (\S+): No space", line)[1])
    left = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(left.values()), f"every file left opens whole: {left}"
    assert not [name for name in left if is_partial(name)], left
    assert str(failed.relative_to(results)) not in left, "the file being written is not left under its name"


def test_read_only_results_directory(advseg, base, tmp_path):
    """Root ignores permission bits, so as root the command runs without CAP_DAC_OVERRIDE (like any user)."""
    out = tmp_path / "attack"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = advseg(*attack_args(base, out), read_only_user=True)
    finally:
        out.chmod(0o755)
    line = assert_one_line_error(result, "attack", out / f"eps_{EPSILONS[0]}.slices.npz", "Permission denied")
    assert "writable" in line
    assert files_under(out) == []


def test_mlflow_store_deleted_under_a_stale_tracking_file(advseg, base, tmp_path):
    tracking = copy(base / "mlflow/tracking.json", tmp_path / "mlflow/tracking.json")
    store = tmp_path / "mlflow.db"
    tracking.write_text(json.dumps({**json.loads(tracking.read_text()), "tracking_uri": f"sqlite:///{store}"}))
    result = advseg(*attack_args(base, tmp_path / "out", tracking=tracking))
    assert_one_line_error(result, "attack", tracking, "delete", "rerun")
    assert not store.exists(), "no empty store is created in place of the deleted one"
    assert not (tmp_path / "out").exists()


def test_debug_prints_the_traceback(advseg, base, tmp_path):
    card = copy(base / "model_card.json", tmp_path / "model_card.json")
    truncate(card)
    result = advseg("--debug", *attack_args(base, tmp_path / "out", card=card))
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("advseg attack: error:")


# --- kill -9 at each stage, then a rerun equal to the uninterrupted run ----------------------------------------------

def test_kill_during_download_then_rerun(advseg, base, tmp_path):
    out = tmp_path / "data"
    argv = ["download", "--settings", json.dumps(DATA_SETTINGS), "--out", out]
    killed = advseg(*argv, kill_at={"suffix": str(out)})
    assert killed.returncode == -signal.SIGKILL, killed
    assert not out.exists(), "a killed download leaves no directory a job would open"
    assert all(is_partial(path.name) for path in tmp_path.iterdir())
    assert advseg(*argv).returncode == 0
    assert files_under(out) == files_under(base / "data")
    for name in files_under(out):
        assert (out / name).read_bytes() == (base / "data" / name).read_bytes(), name


def test_kill_during_checkpoint_then_rerun(advseg, base, tmp_path):
    argv = checkpoint_args(base, tmp_path)
    killed = advseg(*argv, kill_at={"suffix": "model.safetensors"})
    assert killed.returncode == -signal.SIGKILL, killed
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "model_card.json").exists()
    assert advseg(*argv).returncode == 0
    assert (tmp_path / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()
    assert same_json(tmp_path / "model_card.json", base / "model_card.json", ignore=("weights",))


def test_kill_during_certify_then_rerun(advseg, base, tmp_path):
    smoothing = {"sigma": 0.25, "n": 8, "n0": 4, "radii": [0.0, 0.1]}
    argv = checkpoint_args(base, tmp_path) + ["--name", "Unet-resnet18+smoothing", "--defense", "smoothing",
                                              "--defense-settings", json.dumps(smoothing), "--twin", "Unet-resnet18"]
    assert advseg(*argv).returncode == 0

    def certify(out: Path, **kill):
        return advseg("certify", "--model", tmp_path / "model.safetensors", "--card", tmp_path / "model_card.json",
                      "--data", base / "data", "--fold", 0, "--tracking", base / "mlflow/tracking.json",
                      "--out", out, **kill)

    assert certify(tmp_path / "whole/certificate.npz").returncode == 0
    killed = certify(tmp_path / "killed/certificate.npz", kill_at={"suffix": "certificate.npz"})
    assert killed.returncode == -signal.SIGKILL, killed
    assert not [name for name in files_under(tmp_path / "killed") if not is_partial(name)]
    assert certify(tmp_path / "killed/certificate.npz").returncode == 0
    assert same_npz(tmp_path / "killed/certificate.npz", tmp_path / "whole/certificate.npz")


def test_kill_during_attack_then_rerun(advseg, base, tmp_path):
    out = tmp_path / "attack"
    argv = attack_args(base, out)
    killed = advseg(*argv, kill_at={"suffix": f"eps_{EPSILONS[1]}.slices.npz"})
    assert killed.returncode == -signal.SIGKILL, killed
    done = [name for name in files_under(out) if not is_partial(name)]
    assert done == [f"eps_{EPSILONS[0]}.{kind}" for kind in ("example.npz", "json", "slices.npz")], done
    assert same_json(out / f"eps_{EPSILONS[0]}.json", base / f"attack/bce/eps_{EPSILONS[0]}.json")
    assert advseg(*argv).returncode == 0
    for eps in EPSILONS:
        assert same_json(out / f"eps_{eps}.json", base / f"attack/bce/eps_{eps}.json")
        for kind in ("slices.npz", "example.npz"):
            assert same_npz(out / f"eps_{eps}.{kind}", base / f"attack/bce/eps_{eps}.{kind}")
    assert same_npz(out / "transfer.npz", base / "attack/bce/transfer.npz")


def test_kill_during_aggregate_then_rerun(advseg, base, tmp_path):
    argv = aggregate_args(base, tmp_path)
    killed = advseg(*argv, kill_at={"suffix": "size.csv"})
    assert killed.returncode == -signal.SIGKILL, killed
    assert not (tmp_path / "aggregate_run.json").exists()
    for name in files_under(tmp_path / "tables"):
        if not Path(name).name.startswith("."):
            assert (tmp_path / "tables" / name).read_bytes() == (base / "tables" / name).read_bytes(), name
    assert advseg(*argv).returncode == 0
    for name in TABLES:
        assert (tmp_path / "tables" / name).read_bytes() == (base / "tables" / name).read_bytes(), name
    for name in PLOTS:
        assert (tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG")
    assert same_json(tmp_path / "aggregate_run.json", base / "aggregate_run.json", ignore=("mlflow_run_id",))


if __name__ == "__main__":
    serve()
