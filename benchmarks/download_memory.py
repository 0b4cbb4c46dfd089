"""Peak memory of `advseg download` on UW-Madison data, to size the SLURM profile's download job.

Writes generated slices in the competition's layout (benchmarks/prepare_sources.py: 266x266
16-bit PNGs, train.csv with run-length masks, 144 slices per scan), prepares them at 224x224
with `advseg download` in a fresh process for two dataset sizes, and prints each peak
resident memory and the straight line through them, taken to the study's 38,496 slices.
Run: ``python benchmarks/download_memory.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import psutil

from prepare_sources import STUDY_SLICES, write_sources

SIZES = (864, 1728)  # 6 and 12 scans
IMAGE_SIZE = 224


def peak_mb(command: list[str]) -> tuple[float, float]:
    """Peak resident memory (MB, sampled every 50 ms) and seconds of one command."""
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} failed: {process.stderr.read().decode()[-2000:]}")
    return peak / 2**20, time.perf_counter() - started


def main() -> None:
    advseg = str(Path(sys.executable).parent / "advseg")
    print(f"| slices ({IMAGE_SIZE}x{IMAGE_SIZE}) | peak memory, MB | seconds |\n|---:|---:|---:|")
    peaks = []
    for slices in SIZES:
        work = Path(tempfile.mkdtemp(prefix="advseg-download-memory-"))
        try:
            with zipfile.ZipFile(write_sources(work, slices)["zip"]) as archive:
                archive.extractall(work / "extracted")
            settings = {"name": "uwmadison", "image_size": IMAGE_SIZE, "folds": 2, "folds_to_run": [0], "guard": 2,
                        "uwmadison": {"root": str(work / "extracted"), "source": None, "cache": str(work / "cache"),
                                      "exclude": [], "only_labelled": False, "rle_order": "row"}}
            peak, seconds = peak_mb([advseg, "download", "--settings", json.dumps(settings),
                                     "--out", str(work / "prepared")])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        peaks.append(peak)
        print(f"| {slices} | {peak:.0f} | {seconds:.1f} |", flush=True)
    per_slice = (peaks[1] - peaks[0]) / (SIZES[1] - SIZES[0])
    base = peaks[0] - per_slice * SIZES[0]
    print(f"\n{base:.0f} MB + {per_slice:.3f} MB per slice: {base + per_slice * STUDY_SLICES:.0f} MB for the "
          f"study's {STUDY_SLICES} slices")


if __name__ == "__main__":
    main()
