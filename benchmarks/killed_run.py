"""What a run killed with its whole process group needs, and what the rerun costs.

Copies the workflow to a fresh folder and runs tests/configs/tiny.yaml on 2 cores in a process
group of its own; once an attack job has started, kills the whole group with SIGKILL (as a
closed terminal, an out-of-memory killer or a scheduler's kill can), then does what a user
does: reruns, and if Snakemake refuses, `snakemake --unlock` and reruns. Prints each step's
exit status, seconds and last lines, and the states of the MLflow runs at the end.
Run: ``python benchmarks/killed_run.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake(work: Path, *args: str) -> list[str]:
    return [str(BIN / "snakemake"), "--cores", "2", "--configfile", str(CONFIG), *args]


def step(work: Path, label: str, *args: str) -> int:
    started = time.perf_counter()
    result = subprocess.run(snakemake(work, *args), cwd=work, capture_output=True, text=True, env=environment())
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    print(f"\n{label}: exit status {result.returncode} after {time.perf_counter() - started:.1f} s")
    print("\n".join(f"    {line}" for line in lines[-4:]))
    return result.returncode


def environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def main() -> None:
    import mlflow

    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        for name in ("Snakefile", "config.yaml", "workflow", "envs", "profiles"):
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, work / name)
        started = time.perf_counter()
        with open(work / "first_run.log", "w") as log:
            first = subprocess.Popen(snakemake(work), cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                     env=environment(), start_new_session=True)
        attack_logs = work / "results" / "logs" / "attack"
        while not (attack_logs.is_dir() and any(attack_logs.rglob("*.log"))):
            if first.poll() is not None:
                sys.exit(f"the run ended (exit status {first.returncode}) before an attack job started")
            time.sleep(0.5)
        time.sleep(3)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        running = sorted(path.relative_to(attack_logs).as_posix() for path in attack_logs.rglob("*.log"))
        print(f"killed Snakemake's process group with SIGKILL after {time.perf_counter() - started:.1f} s, "
              f"attack jobs started: {', '.join(running)}")
        if step(work, "rerun") != 0:
            step(work, "snakemake --unlock", "--unlock")
            step(work, "rerun after --unlock")
        mlflow.set_tracking_uri(f"sqlite:///{work}/results/mlflow.db")
        states = mlflow.search_runs(search_all_experiments=True)["status"].value_counts().to_dict()
        print(f"\nMLflow runs by state: {states}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
