"""How long Snakemake takes to plan a large grid: 10 architectures x 10 encoders x 4 losses x 10 eps.

Prints the wall time of `snakemake -n`: the first run builds every model once on the meta
device (the config check, remembered in ~/.cache/advseg/, here a fresh one); the later
runs only plan (the median of five). Run: ``python benchmarks/dag_size.py``.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPEATS = 5  # a machine's noise is about a second either way
ARCHS = ["Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "PAN", "UPerNet"]
ENCODERS = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "efficientnet-b0", "resnet101", "efficientnet-b1",
            "se_resnext50_32x4d", "se_resnet50", "resnext50_32x4d"]


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        for name in ("Snakefile", "config.yaml", "workflow", "envs"):
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, work / name)
        models = "".join(f"  - {{arch: {arch}, encoder: {encoder}}}\n" for arch in ARCHS for encoder in ENCODERS)
        epsilons = ", ".join(f"0.0{i}" for i in range(10))
        (work / "grid.yaml").write_text(f"models:\n{models}attack: {{methods: [fgsm], losses: [bce, dicefocal, dice, "
                                        f"focal], epsilons: [{epsilons}]}}\nreport: {{correlation_eps: null}}\n")
        command = [str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "1", "--configfile", "grid.yaml"]
        print("| run | jobs | seconds |\n|---|---:|---:|")
        for label, repeats in (("first (meta-device check of 100 models)", 1), ("later (check remembered)", REPEATS)):
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=True,
                                        env={**os.environ, "XDG_CACHE_HOME": str(work / "cache")})
                times.append(time.perf_counter() - started)
            total = re.search(r"^total\s+(\d+)$", result.stdout, re.M).group(1)
            spread = f" (median of {repeats}: {min(times):.1f} to {max(times):.1f})" if repeats > 1 else ""
            print(f"| {label} | {total} | {statistics.median(times):.1f}{spread} |")


if __name__ == "__main__":
    main()
