"""Where a job computes: a CUDA device when one is there, else the CPU.

Snakemake's ``gpu`` resource only counts jobs; it does not say which GPU a job gets.
With several GPUs on one workstation each job claims a free one through a lock file,
so ``--resources gpu=2`` on a two-GPU machine puts one job on each. Under SLURM the
job sees only its allotted GPUs, so it claims the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

log = logging.getLogger(__name__)
LOCK_DIR = Path(os.environ.get("ADVSEG_GPU_LOCK_DIR", tempfile.gettempdir()))


def set_threads(threads: int) -> None:
    torch.set_num_threads(max(1, threads))


@contextlib.contextmanager
def claim_device(poll_seconds: float = 1.0) -> Iterator[torch.device]:
    """Yield a free CUDA device (held by a file lock until exit), or the CPU."""
    count = torch.cuda.device_count()
    if count == 0:
        log.info("device: cpu (%d threads)", torch.get_num_threads())
        yield torch.device("cpu")
        return
    with claim_slot(count, poll_seconds) as index:
        log.info("device: cuda:%d (%s)", index, torch.cuda.get_device_name(index))
        yield torch.device("cuda", index)


@contextlib.contextmanager
def claim_slot(count: int, poll_seconds: float = 1.0, lock_dir: Path = LOCK_DIR) -> Iterator[int]:
    """Hold an exclusive lock on one of ``count`` slots, waiting until one is free."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "_")
    while True:
        for index in range(count):
            handle = open(lock_dir / f"advseg-gpu-{visible}-{index}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield index
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll_seconds)
