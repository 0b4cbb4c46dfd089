"""How long Snakemake takes to plan the workflow, against the size of the grid.

Every grid is FGSM with 4 attack losses x 10 eps over N models (architecture x encoder pairs
from 10 x 10); the last row asks for the all-pairs transfer matrix that a grid of more than
transfer.all_pairs_up_to models skips by default. Each grid is planned (`snakemake -n`) in a
fresh copy of the workflow, as from a fresh clone: the first run also builds every model once
on the meta device (the config check, then remembered in a fresh ~/.cache/advseg/); later
runs only plan (median of three). Each time is wall seconds and, in brackets, the CPU seconds
of the Snakemake process: on an idle machine the two agree, on a busy one the CPU seconds still
say what planning costs. Run: ``python benchmarks/dag_size.py``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3
ARCHS = ["Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "PAN", "UPerNet"]
ENCODERS = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "efficientnet-b0", "resnet101", "efficientnet-b1",
            "se_resnext50_32x4d", "se_resnet50", "resnext50_32x4d"]
# (label, architectures, encoders, extra config)
GRIDS = [
    ("4 models", 2, 2, ""),
    ("10 models", 5, 2, ""),
    ("25 models", 5, 5, ""),
    ("50 models", 10, 5, ""),
    ("100 models", 10, 10, ""),
    ("100 models, all-pairs transfer", 10, 10, "transfer: {all_pairs_up_to: 100}\n"),
]


def grid_config(archs: int, encoders: int, extra: str) -> str:
    models = "".join(f"  - {{arch: {arch}, encoder: {encoder}}}\n" for arch in ARCHS[:archs]
                     for encoder in ENCODERS[:encoders])
    epsilons = ", ".join(f"0.0{i}" for i in range(10))
    return (f"models:\n{models}attack: {{methods: [fgsm], study_protocol: false, "
            f"losses: [bce, dicefocal, dice, focal], epsilons: [{epsilons}]}}\nreport: {{correlation_eps: null}}\n{extra}")


def plan(work: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds of one `snakemake -n`, and the number of jobs it plans."""
    command = [str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "1", "--configfile", "grid.yaml"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=True,
                            env={**os.environ, "XDG_CACHE_HOME": str(work / "cache")})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, int(re.search(r"^total\s+(\d+)$", result.stdout, re.M).group(1))


def main() -> None:
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| grid | jobs | first run, s (meta-device check) | later runs, s (median of 3) |\n|---|---:|---:|---:|")
    for label, archs, encoders, extra in GRIDS:
        with tempfile.TemporaryDirectory() as directory:
            work = Path(directory)
            for name in ("Snakefile", "config.yaml", "workflow", "envs"):
                (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, work / name)
            (work / "grid.yaml").write_text(grid_config(archs, encoders, extra))
            first_wall, first_cpu, jobs = plan(work)
            later = [plan(work) for _ in range(REPEATS)]
        later_wall = statistics.median(run[0] for run in later)
        later_cpu = statistics.median(run[1] for run in later)
        print(f"| {label} | {jobs} | {first_wall:.1f} (CPU {first_cpu:.1f}) | {later_wall:.1f} (CPU {later_cpu:.1f}) |",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
