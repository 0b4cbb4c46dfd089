"""What ``profiles/slurm`` learns about the cluster before Snakemake submits anything.

A run that cannot finish should say so at once. Without accounting (no slurmdbd) ``sacct``
sees no job, so the executor would wait forever for jobs that ended long ago: the profile
reads job states with ``squeue`` there. A job that asks for more memory, time or GPUs than
any node of its partition has is either refused by sbatch or left pending for ever: the
profile checks every request against the partition first and stops, naming the setting to
change. One ``scontrol show config`` and one ``sinfo`` call, when the profile is loaded.
Only the standard library: the profile imports this module in Snakemake's process.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

PROFILE = "profiles/slurm/config.yaml"
NO_ACCOUNTING = "accounting_storage/none"
# The executor's pause between two status checks grows to 180 s when no job finishes;
# squeue must still list a finished job then, so MinJobAge must be at least this long.
LONGEST_STATUS_PAUSE_S = 180


class ProfileError(SystemExit):
    """Stops Snakemake while it loads the profile, with this message and exit status 1.

    A SystemExit, because Snakemake shows any other error raised by a profile after its
    whole usage text, where the one line that matters scrolls away.
    """

    def __init__(self, message: str):
        super().__init__(f"{PROFILE}: {message}")


@dataclass(frozen=True)
class Node:
    """What one node offers a job in the chosen partition."""
    memory_mb: int
    gpus: int
    gpu_models: frozenset[str]


@dataclass(frozen=True)
class SlurmCluster:
    partition: str
    accounting: bool
    min_job_age_s: int | None
    nodes: tuple[Node, ...]
    time_limit_min: int | None  # None: no limit

    @classmethod
    def query(cls, partition: str = "") -> "SlurmCluster":
        """The cluster as seen from this (login) node; ``partition`` empty: the default one."""
        missing = [tool for tool in ("scontrol", "sinfo") if shutil.which(tool) is None]
        if missing:
            raise ProfileError(f"{' and '.join(missing)} not found: this profile submits jobs to SLURM, so run "
                               "Snakemake on a login node of the cluster (or use profiles/default or "
                               "profiles/local-gpu on this machine)")
        return cls.parse(_run("scontrol", "show", "config"),
                         _run("sinfo", "--noheader", "--Node", "--format=%P|%m|%G|%l"), partition)

    @classmethod
    def parse(cls, config_text: str, sinfo_text: str, partition: str = "") -> "SlurmCluster":
        """From the output of ``scontrol show config`` and ``sinfo --Node --format=%P|%m|%G|%l``."""
        config = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", config_text, re.M))
        rows = [line.split("|") for line in sinfo_text.splitlines() if line.count("|") == 3]
        names = {row[0].rstrip("*") for row in rows}
        if not partition:
            defaults = {row[0].rstrip("*") for row in rows if row[0].endswith("*")}
            if not defaults:
                raise ProfileError(f"the cluster has no default partition: set SBATCH_PARTITION to one of "
                                   f"{', '.join(sorted(names)) or '(sinfo lists none)'}")
            partition = defaults.pop()
        unknown = [name for name in partition.split(",") if name not in names]  # sbatch takes a list
        if unknown:
            raise ProfileError(f"SBATCH_PARTITION={partition}: sinfo lists no partition {', '.join(unknown)}; "
                               f"choose from {', '.join(sorted(names)) or '(none)'}")
        chosen = [row for row in rows if row[0].rstrip("*") in partition.split(",")]
        nodes = tuple(Node(memory_mb=int(memory), **_gpus(gres)) for _, memory, gres, _ in chosen)
        age = re.match(r"\d+", config.get("MinJobAge", ""))
        return cls(partition=partition, accounting=config.get("AccountingStorageType", NO_ACCOUNTING) != NO_ACCOUNTING,
                   min_job_age_s=int(age.group()) if age else None, nodes=nodes,
                   time_limit_min=max((parse_minutes(row[3]) for row in chosen), key=_no_limit_last))

    # ------------------------------------------------------------- what the profile asks
    @property
    def status_command(self) -> str:
        """``sacct`` where accounting keeps finished jobs; else ``squeue``, if it keeps them long enough."""
        if self.accounting:
            return "sacct"
        if self.min_job_age_s is not None and self.min_job_age_s < LONGEST_STATUS_PAUSE_S:
            raise ProfileError(
                f"this cluster has no job accounting (AccountingStorageType={NO_ACCOUNTING}), so job states come "
                f"from squeue, which forgets a finished job after MinJobAge={self.min_job_age_s} s; Snakemake may "
                f"look only every {LONGEST_STATUS_PAUSE_S} s and would then wait forever. Ask the cluster's "
                f"administrators for MinJobAge >= {LONGEST_STATUS_PAUSE_S} in slurm.conf, or for slurmdbd")
        return "squeue"

    def memory(self, rule: str, mb: int) -> int:
        """``mb``, if some node of the partition has that much memory."""
        largest = max(node.memory_mb for node in self.nodes)
        if mb > largest:
            raise ProfileError(
                f"{_jobs(rule)} ask for mem_mb={mb}, but the largest node of partition {self.partition} has "
                f"{largest} MB. Lower {_key(rule, 'mem_mb')} in {PROFILE} (at most {largest}), or choose a "
                f"partition with larger nodes (SBATCH_PARTITION)")
        return mb

    def minutes(self, rule: str, minutes: int) -> int:
        """``minutes``, if the partition lets a job run that long."""
        if self.time_limit_min is not None and minutes > self.time_limit_min:
            raise ProfileError(
                f"{_jobs(rule)} ask for runtime={minutes} min, but partition {self.partition} allows "
                f"{self.time_limit_min} min (such jobs would stay pending for ever). Lower {_key(rule, 'runtime')} "
                f"in {PROFILE}, or choose a partition with a longer time limit (SBATCH_PARTITION)")
        return minutes

    def gpus(self, rule: str, count: int, model: str = "") -> int:
        """``count`` GPUs (of ``model``, if given), if some node of the partition has them."""
        if count == 0:
            return 0
        fitting = [node for node in self.nodes if (not model or model in node.gpu_models) and node.gpus >= count]
        if not fitting:
            what = f"{count} GPU{'s' if count > 1 else ''}" + (f" of model {model}" if model else "")
            most = max(node.gpus for node in self.nodes)
            offered = sorted({gpu_model for node in self.nodes for gpu_model in node.gpu_models})
            has = f"at most {most} GPUs per node" + (f" ({', '.join(offered)})" if offered else "") if most else "no GPUs"
            raise ProfileError(
                f"{_jobs(rule)} ask for {what}, but partition {self.partition} has {has}. Choose a GPU partition "
                f"(SBATCH_PARTITION), set ADVSEG_SLURM_GPUS to what a node has (0 runs them on CPUs)"
                + (", or another ADVSEG_SLURM_GPU_MODEL" if model else ""))
        return count


def parse_minutes(limit: str) -> int | None:
    """A SLURM time limit ('infinite', 'MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM[:SS]') in whole minutes,
    rounded down: a job fits if it asks for no more."""
    limit = limit.strip()
    if limit.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:  # MM[:SS]
        hours, minutes, seconds = 0, parts[0], (parts + [0])[1]
    return (int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds) // 60


def _no_limit_last(minutes: int | None) -> float:
    return float("inf") if minutes is None else minutes


def _gpus(gres: str) -> dict:
    """GPU count and models of a node from sinfo's %G, e.g. 'gpu:a100:4(S:0-1),gpu:v100:2' or '(null)'."""
    count, models = 0, set()
    for entry in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = entry.strip().split(":")
        if parts[0] != "gpu" or len(parts) < 2 or not parts[-1].isdigit():
            continue
        count += int(parts[-1])
        models.update(parts[1:-1])
    return {"gpus": count, "gpu_models": frozenset(models)}


def _jobs(rule: str) -> str:
    return "jobs" if rule == "default" else f"{rule} jobs"


def _key(rule: str, resource: str) -> str:
    return f"default-resources.{resource}" if rule == "default" else f"set-resources.{rule}.{resource}"


def _run(*command: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ProfileError(f"`{' '.join(command)}` did not answer within 60 s: is slurmctld up?") from None
    if result.returncode != 0:
        raise ProfileError(f"`{' '.join(command)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout
