"""Which GPU a job computes on, chosen before CUDA starts.

Snakemake's ``gpu`` resource only counts jobs; it does not say which GPU a job gets.
So a job claims one itself, at the very start of its command: it holds an exclusive
lock file for one device for as long as it runs (the kernel drops the lock when the
process dies, even by SIGKILL) and narrows ``CUDA_VISIBLE_DEVICES`` to that device,
which CUDA reads once, when it initialises. Devices are counted without touching CUDA
(``ADVSEG_GPUS``, ``nvidia-smi -L``, ``/proc/driver/nvidia/gpus``), so the claim can
come before torch is imported.

A ``CUDA_VISIBLE_DEVICES`` set before the job starts (by SLURM, or by the user) is
respected: a job only ever picks among the devices it lists, and with one device (or
none) there is nothing to pick. Inside a SLURM job that was given no GPU the job
stays on the CPU rather than take a node's GPU that SLURM gave to someone else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

VISIBLE = "CUDA_VISIBLE_DEVICES"
GPU_COUNT_VARIABLE = "ADVSEG_GPUS"
LOCK_DIR_VARIABLE = "ADVSEG_GPU_LOCK_DIR"
NVIDIA_PROC_GPUS = Path("/proc/driver/nvidia/gpus")
# values of CUDA_VISIBLE_DEVICES that hide every device
NO_DEVICES = {"", "-1", "NoDevFiles", "none"}


@dataclass(frozen=True)
class GpuClaim:
    """What this process computes on: ``device`` is its ``CUDA_VISIBLE_DEVICES`` entry (None: CPU).

    ``source`` says why: ``"lock"`` (claimed here, held until the context exits),
    ``"environment"`` (set before the job started: SLURM or the user), ``"none"`` (no GPU).
    """

    device: str | None
    source: str


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def count_gpus(proc_dir: Path = NVIDIA_PROC_GPUS) -> int:
    """GPUs on this machine, found without initialising CUDA.

    ``ADVSEG_GPUS`` wins (tests, or a machine whose driver tools mislead); then
    ``nvidia-smi -L``; then the NVIDIA driver's entries under /proc.
    """
    override = os.environ.get(GPU_COUNT_VARIABLE)
    if override is not None:
        if not override.strip().isdigit():
            raise ValueError(f"{GPU_COUNT_VARIABLE}={override!r}: expected a number of GPUs (0 or more)")
        return int(override)
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            listing = None
        if listing is not None and listing.returncode == 0:
            return len(re.findall(r"^GPU \d+:", listing.stdout, re.M))
    if proc_dir.is_dir():
        return sum(1 for entry in proc_dir.iterdir() if entry.is_dir())
    return 0


def visible_devices() -> list[str] | None:
    """The devices ``CUDA_VISIBLE_DEVICES`` lists, [] when it hides all, None when it is unset."""
    value = os.environ.get(VISIBLE)
    if value is None:
        return None
    if value.strip() in NO_DEVICES:
        return []
    return [token.strip() for token in value.split(",") if token.strip()]


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_VARIABLE) or tempfile.gettempdir())


@contextlib.contextmanager
def claim_gpu(poll_seconds: float = 1.0, lock_dir: Path | None = None) -> Iterator[GpuClaim]:
    """Claim one GPU for this process before CUDA starts; the CPU when there is none.

    Call it first thing in a command, before data is loaded or torch touches CUDA;
    it waits (polling every ``poll_seconds``) while every candidate device is held by
    another job. Inside, ``CUDA_VISIBLE_DEVICES`` names the claimed device (so torch
    sees it as ``cuda:0``); on exit the lock is released and the variable restored.
    """
    listed = visible_devices()
    in_slurm_job = "SLURM_JOB_ID" in os.environ
    if listed is None and in_slurm_job:
        # SLURM sets CUDA_VISIBLE_DEVICES for the GPUs it gives; none given means none to use
        _refuse_after_cuda_started()
        with _environment(VISIBLE, ""):
            log.info("device: cpu (SLURM job %s was given no GPU)", os.environ["SLURM_JOB_ID"])
            yield GpuClaim(None, "none")
        return
    if listed is not None and len(listed) <= 1:
        device = listed[0] if listed else None
        log.info("device: %s (%s=%r set before the job)", f"GPU {device}" if device else "cpu",
                 VISIBLE, os.environ[VISIBLE])
        yield GpuClaim(device, "environment" if device else "none")
        return
    candidates = listed if listed is not None else [str(index) for index in range(count_gpus())]
    if not candidates:
        log.info("device: cpu (no GPU found)")
        yield GpuClaim(None, "none")
        return
    # jobs of one SLURM allocation coordinate among themselves; other allocations' GPUs
    # may carry the same names (device cgroups renumber them), so they do not collide
    scope = f"slurm{os.environ['SLURM_JOB_ID']}" if in_slurm_job else "local"
    _refuse_after_cuda_started()
    with _hold_one_of(candidates, scope, poll_seconds, lock_dir or default_lock_dir()) as device:
        extra = {} if listed is not None else {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # nvidia-smi's numbering
        with _environment(VISIBLE, device, **extra):
            log.info("device: GPU %s (claimed; %d candidate(s))", device, len(candidates))
            yield GpuClaim(device, "lock")


@contextlib.contextmanager
def claim_device(poll_seconds: float = 1.0) -> Iterator[torch.device]:
    """A torch device for this job: its claimed GPU as ``cuda:0``, or the CPU.

    Within :func:`claim_gpu` (the command's start) this only reports the claimed GPU;
    on its own it claims one, which works only while CUDA has not started.
    """
    with claim_gpu(poll_seconds) as claim:
        import torch

        if claim.device is None or not torch.cuda.is_available():
            log.info("device: cpu (%d threads)", torch.get_num_threads())
            yield torch.device("cpu")
            return
        log.info("device: cuda:0 = GPU %s (%s)", claim.device, torch.cuda.get_device_name(0))
        yield torch.device("cuda", 0)


def _refuse_after_cuda_started() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("claim_gpu() must run before CUDA is initialised: call it at the start of the command")


@contextlib.contextmanager
def _environment(name: str, value: str, **more: str) -> Iterator[None]:
    """Set environment variables for the duration of the block, then put back what was there."""
    changes = {name: value, **{key: val for key, val in more.items() if key not in os.environ}}
    before = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _hold_one_of(devices: Sequence[str], scope: str, poll_seconds: float, lock_dir: Path) -> Iterator[str]:
    """An exclusive ``flock`` on the lock file of one of ``devices``, waiting until one is free."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    waiting_since = None
    while True:
        for device in devices:
            descriptor = _open_lock(lock_dir / f"advseg-gpu-{scope}-{_safe(device)}.lock")
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(descriptor)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            try:
                yield device
            finally:
                os.close(descriptor)  # closing the only descriptor releases the lock
            return
        if waiting_since is None:
            waiting_since = time.monotonic()
            log.info("all %d GPU(s) are claimed by other jobs; waiting (locks in %s)", len(devices), lock_dir)
        time.sleep(poll_seconds)


def _open_lock(path: Path) -> int:
    """Open a lock file, shared by every user of the machine.

    A read-only descriptor is enough for ``flock``. An existing file is opened without
    O_CREAT, which the kernel refuses for other users' files in sticky /tmp.
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(descriptor, 0o666)  # umask aside: other users' jobs must open it too
        return descriptor


def _safe(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", device)
