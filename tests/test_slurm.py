"""The tiny workflow submitted through profiles/slurm to a real one-node SLURM cluster.

The cluster (slurmctld, slurmd, munged; no slurmdbd) runs on localhost with two fake
GPUs (tests/slurm_cluster.py). The first run has the `advseg aggregate` step made to
fail: the workflow must fail and show that job's log, after SLURM ran every other job
to completion. The second run finishes what is left, and a third finds nothing to do.
Assertions are about the DAG as a whole (every job submitted, every job COMPLETED,
as many SLURM jobs as Snakemake jobs), not about today's list of rules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import LocalSlurmCluster, unavailable_reason

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "configs" / "tiny.yaml"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
FAILING_STEP = "aggregate"
FAILURE_MARK = "made to fail by the SLURM test"

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    # 4 CPUs declared on a 2-core machine: two of the profile's 2-CPU GPU jobs at once
    cluster = LocalSlurmCluster(cpus=4, memory_mb=65536, gpus=2)
    cluster.start()
    yield cluster
    cluster.stop()
    assert not cluster.running_daemons(), "a SLURM or munge daemon outlived the test"


def workflow_copy(directory: Path) -> Path:
    for name in ("Snakefile", "config.yaml", "workflow", "envs", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, directory / name)
    return directory


def failing_advseg(directory: Path) -> Path:
    """A bin directory whose `advseg` fails one step and runs the real one otherwise."""
    directory.mkdir()
    script = directory / "advseg"
    script.write_text(f"#!/bin/sh\n"
                      f'if [ "$1" = "{FAILING_STEP}" ]; then echo "advseg {FAILING_STEP}: {FAILURE_MARK}" >&2; exit 3; fi\n'
                      f'exec "{BIN / "advseg"}" "$@"\n')
    script.chmod(0o755)
    return directory


def snakemake(directory: Path, cluster: LocalSlurmCluster, *args: str, path_first: Path | None = None,
              profile: bool = True) -> subprocess.CompletedProcess:
    # the profile as a user runs it; the status settings only make a test on a tiny cluster quick
    submission = ["--profile", str(REPO / "profiles" / "slurm"), "--slurm-status-command", "squeue",
                  "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]
    command = [str(BIN / "snakemake"), "--configfile", str(TINY), *(submission if profile else ["--cores", "1"]), *args]
    path = os.pathsep.join(str(p) for p in (path_first, BIN) if p) + os.pathsep + os.environ["PATH"]
    started = time.monotonic()
    result = subprocess.run(command, cwd=directory, env={**cluster.env, "PATH": path},
                            text=True, capture_output=True, timeout=3000)
    result.seconds = time.monotonic() - started
    return result


def run_id(output: str) -> str:
    found = re.findall(r"SLURM run ID: (\S+)", output)
    assert len(found) == 1, output[-3000:]
    return found[0]


def submitted_job_ids(output: str) -> list[str]:
    return re.findall(r"has been submitted with SLURM jobid (\d+)", output)


def job_headers(output: str) -> tuple[list[str], list[str]]:
    """Rules of the jobs this run started: submitted to SLURM, and run locally (e.g. `all`).

    Only for a run without failures: a failed job's shown SLURM log repeats its header.
    """
    return re.findall(r"^rule (\w+):$", output, re.M), re.findall(r"^localrule (\w+):$", output, re.M)


def total_jobs(output: str) -> int:
    return int(re.search(r"^total\s+(\d+)\s*$", output.split("Job stats:")[1], re.M).group(1))


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    directory = workflow_copy(tmp_path_factory.mktemp("slurm-workflow"))
    broken = failing_advseg(tmp_path_factory.mktemp("bin") / "bin")
    first = snakemake(directory, cluster, path_first=broken)
    jobs_after_first = cluster.finished_jobs()
    second = snakemake(directory, cluster)
    third = snakemake(directory, cluster, "--dry-run")
    summary = snakemake(directory, cluster, "--summary", profile=False)
    print(f"\nSLURM runs: failing {first.seconds:.0f} s, rest {second.seconds:.0f} s")
    return {"dir": directory, "first": first, "second": second, "third": third, "summary": summary,
            "jobs_after_first": jobs_after_first, "jobs": cluster.finished_jobs()}


def records_of(jobs: list[dict], output: str) -> list[dict]:
    """The SLURM jobs a run submitted: the executor names every job after the run's ID."""
    return [job for job in jobs if job["Name"] == run_id(output)]


def test_a_failed_slurm_job_fails_the_workflow_and_shows_its_log(runs):
    first = runs["first"]
    output = first.stderr + first.stdout
    assert first.returncode != 0, output[-3000:]
    assert f"Error in rule {FAILING_STEP}" in output
    assert FAILURE_MARK in output, "the failed job's log is shown"
    retries = yaml.safe_load(PROFILE.read_text())["retries"]
    records = records_of(runs["jobs_after_first"], output)
    assert sorted(job["JobId"] for job in records) == sorted(submitted_job_ids(output))
    failed = [job for job in records if job["JobState"] != "COMPLETED"]
    assert len(failed) == 1 + retries, f"one try and {retries} retries of the failing job: {failed}"
    # the job's step (srun) exits 1 when the Snakemake job inside it fails
    assert all(job["JobState"] == "FAILED" and job["ExitCode"] != "0:0" for job in failed), failed


def test_the_rerun_completes_every_job_on_slurm(runs):
    second = runs["second"]
    output = second.stderr + second.stdout
    assert second.returncode == 0, output[-5000:]
    records = records_of(runs["jobs"], output)
    remote, local = job_headers(output)
    assert remote == [FAILING_STEP], "only the failed step is left after the first run"
    assert len(remote) + len(local) == total_jobs(output)
    assert sorted(job["JobId"] for job in records) == sorted(submitted_job_ids(output))
    assert len(records) == len(remote) and all(job["JobState"] == "COMPLETED" for job in records), records


def test_as_many_slurm_jobs_as_snakemake_jobs(runs):
    first = runs["first"].stderr + runs["first"].stdout
    second = runs["second"].stderr + runs["second"].stdout
    retries = yaml.safe_load(PROFILE.read_text())["retries"]
    records = records_of(runs["jobs"], first)
    _, local = job_headers(second)  # local jobs (the target rule) run once everything else is done
    assert total_jobs(first) == len(records) - retries + len(local), "every job but local ones went to SLURM"
    done = [job for job in records if job["JobState"] == "COMPLETED"]
    assert len(done) == len(records) - (1 + retries)
    assert all(job["ExitCode"] == "0:0" and job["Partition"] == "debug" for job in done)


def test_nothing_is_left_to_do(runs):
    third, summary = runs["third"], runs["summary"]
    assert third.returncode == 0, third.stderr[-3000:]
    assert "Nothing to be done" in third.stderr + third.stdout
    assert summary.returncode == 0, summary.stderr[-3000:]
    rows = [line.split("\t") for line in summary.stdout.splitlines()[1:] if line.strip()]
    header = summary.stdout.splitlines()[0].split("\t")
    status = header.index("status")
    done = ("ok", "removed temp file")
    assert rows and all(row[status] in done for row in rows), [row for row in rows if row[status] not in done]
    results = runs["dir"] / "results"
    assert (results / "tables" / "attack_summary.csv").stat().st_size > 0
    assert (results / "tables" / "attack_losses.md").stat().st_size > 0


def test_gpu_jobs_ran_on_the_gpu_slurm_gave_them(runs):
    """The fake GPUs reach the jobs: each GPU job saw the device SLURM picked for it."""
    logs = [path.read_text(errors="replace") for path in (runs["dir"] / "results" / "logs").rglob("*.log")]
    seen = {match for text in logs for match in re.findall(r"CUDA_VISIBLE_DEVICES='(\d)' set before the job", text)}
    assert seen and seen <= {"0", "1"}, seen
