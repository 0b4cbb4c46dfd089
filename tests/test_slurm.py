"""The workflow submitted through profiles/slurm to a real one-node SLURM cluster.

The cluster (slurmctld, slurmd, munged; no slurmdbd, so no accounting) runs on localhost:
one node of 22 GB with two fake GPUs (tests/slurm_cluster.py), as a new user's small
cluster. The profile runs as a user runs it: it must find the status query that works
without accounting by itself. The grid is tests/configs/slurm.yaml over tiny.yaml: one
model, one epoch, one attack, so every rule but transfer runs once. Two runs share the
cluster at once, each in its own copy of the workflow: one asks only for the `tracking`
job, with `advseg tracking` made to fail, and must fail and show that job's log; the
other runs the whole workflow, and a dry run after it finds nothing to do. Assertions
are about the DAG as a whole (every job submitted, every job COMPLETED, as many SLURM
jobs as Snakemake jobs), not about today's list of rules. Runs that cannot fit the
cluster (more memory than the node has, more time than a partition allows) must stop
before submitting anything, naming the setting to change.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import LocalSlurmCluster, die_with_parent, unavailable_reason

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIGS = [REPO / "tests" / "configs" / "tiny.yaml", REPO / "tests" / "configs" / "slurm.yaml"]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
FAILING_STEP = "tracking"  # an early, cheap job: failing it costs a few seconds of SLURM time
FAILURE_MARK = "made to fail by the SLURM test"
SHORT_MINUTES = 300  # the default (60) and download (240) fit, training (720) does not
TIMEOUT = 900  # seconds for one snakemake command; the workflow run takes about 3 min

# `snakemake` itself, but with the executor sleeping --seconds-between-status-checks
# between two status checks, always. The SLURM plugin adds 10 s to that sleep after each
# check that finds no job finished (up to 180 s), with no setting to turn that off, so
# on a cluster whose jobs take seconds each finished job would be noticed up to tens of
# seconds late (the whole run took minutes longer). What is submitted, and how states
# are read and reported, is the plugin's own.
STEADY_POLLING_SNAKEMAKE = """
import sys
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_executor_plugin_slurm import Executor
paced = RemoteExecutor.__dict__["next_seconds_between_status_checks"]
assert Executor.next_seconds_between_status_checks is paced and Executor.sleep is RemoteExecutor.sleep, (
    "the SLURM plugin paces its status checks another way now: revisit STEADY_POLLING_SNAKEMAKE")
RemoteExecutor.next_seconds_between_status_checks = property(
    lambda self: self.workflow.remote_execution_settings.seconds_between_status_checks,
    lambda self, value: None)
from snakemake.cli import main
sys.exit(main())
"""

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    # 4 CPUs declared on a 2-core machine: two of the profile's 2-CPU GPU jobs at once; 22 GB, the
    # memory of the node on which a new user's run once waited forever; a partition of short jobs
    cluster = LocalSlurmCluster(cpus=4, memory_mb=22000, gpus=2, partitions={"short": f"MaxTime={SHORT_MINUTES}"})
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


class Snakemake:
    """One snakemake command, started at once in ``directory``; :meth:`result` waits for it."""

    def __init__(self, directory: Path, cluster: LocalSlurmCluster, *args: str, path_first: Path | None = None,
                 profile: bool = True):
        # the profile as a user runs it; the pace of status checks only makes a test of seconds-long jobs
        # quick (with the plugin's pace the same run took 4 min 2 s on a loaded machine)
        submission = ["--profile", str(REPO / "profiles" / "slurm"),
                      "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]
        launcher = [sys.executable, "-c", STEADY_POLLING_SNAKEMAKE] if profile else [str(BIN / "snakemake")]
        self.command = [*launcher, "--configfile", *map(str, CONFIGS),
                        *(submission if profile else ["--cores", "1"]), *args]
        path = os.pathsep.join(str(p) for p in (path_first, BIN) if p) + os.pathsep + os.environ["PATH"]
        # the jobs import this checkout's advseg, whichever checkout the environment's editable install names
        inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
        pythonpath = os.pathsep.join([str(REPO / "src"), *inherited])
        # files, not pipes: a run that prints much must not block while another one is waited for
        self.stdout, self.stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.started, self.ended = time.monotonic(), None
        # like the cluster's daemons, a run ends with this process even if no teardown runs
        self.process = subprocess.Popen(self.command, cwd=directory, text=True, stdout=self.stdout,
                                        stderr=self.stderr, stdin=subprocess.DEVNULL,
                                        preexec_fn=lambda: die_with_parent(signal.SIGINT),
                                        env={**cluster.env, "PATH": path, "PYTHONPATH": pythonpath})

    def result(self) -> subprocess.CompletedProcess:
        try:
            self.process.wait(max(1.0, TIMEOUT - (time.monotonic() - self.started)))
        finally:
            self.stop()
        self.ended = self.ended or time.monotonic()
        outputs = []
        for stream in (self.stdout, self.stderr):
            stream.seek(0)
            outputs.append(stream.read())
            stream.close()
        result = subprocess.CompletedProcess(self.command, self.process.returncode, *outputs)
        result.seconds = self.ended - self.started
        return result

    def stop(self) -> None:
        """End the command by its PID if it is still running (a timeout, or a failure elsewhere).

        SIGINT: Snakemake cancels its SLURM jobs and exits (on SIGTERM it would wait for them).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def together(*commands) -> list[subprocess.CompletedProcess]:
    """Start every command (a function that starts one), then wait for all; none outlives this call."""
    started = []
    try:
        for command in commands:
            started.append(command())
        while any(run.ended is None for run in started):  # each run's own time, for the printed summary
            for run in started:
                if run.ended is None and run.process.poll() is not None:
                    run.ended = time.monotonic()
            if time.monotonic() - started[0].started > TIMEOUT:
                break  # result() below raises TimeoutExpired for a run still going
            time.sleep(0.2)
        return [run.result() for run in started]
    finally:
        for run in started:
            run.stop()


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
    failing_dir = workflow_copy(tmp_path_factory.mktemp("slurm-failing"))
    directory = workflow_copy(tmp_path_factory.mktemp("slurm-workflow"))
    broken = failing_advseg(tmp_path_factory.mktemp("bin") / "bin")
    # independent runs in their own directories share the cluster at once: the failing one
    # mostly waits on SLURM, and the workflow's chain of jobs leaves a core free
    failing, workflow = together(lambda: Snakemake(failing_dir, cluster, FAILING_STEP, path_first=broken),
                                 lambda: Snakemake(directory, cluster))
    # neither locks the directory
    dry_run, summary = together(lambda: Snakemake(directory, cluster, "--dry-run"),
                                lambda: Snakemake(directory, cluster, "--summary", profile=False))
    print(f"\nSLURM runs: failing {failing.seconds:.0f} s, workflow {workflow.seconds:.0f} s, "
          f"dry run {dry_run.seconds:.0f} s, summary {summary.seconds:.0f} s")
    return {"dir": directory, "failing": failing, "workflow": workflow, "dry_run": dry_run, "summary": summary,
            "jobs": cluster.finished_jobs()}


def profile_as_is(directory: Path, cluster: LocalSlurmCluster, profile: Path,
                  **environment: str) -> subprocess.CompletedProcess:
    """`snakemake --profile PROFILE` with no other flag, as a user types it."""
    return subprocess.run([str(BIN / "snakemake"), "--profile", str(profile)], cwd=directory, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**cluster.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **environment})


def test_memory_no_node_has_stops_the_run_before_any_submission(cluster, tmp_path):
    """The request that once left a run waiting forever: 32 GB for the download job on a 22 GB node."""
    directory = workflow_copy(tmp_path)
    profile = directory / "profiles" / "slurm"
    text = (profile / "config.yaml").read_text()
    download = re.search(r"^  download:\n    mem_mb: \?cluster\.memory\(\"download\", (\d+)\)", text, re.M)
    assert download, "the profile sets the download job's memory another way now: revisit this test"
    (profile / "config.yaml").write_text(text.replace(download.group(0), download.group(0).replace(
        download.group(1), "32000")))
    queued_before = cluster.queued_job_ids()
    stopped = profile_as_is(directory, cluster, profile)
    output = stopped.stderr + stopped.stdout
    assert stopped.returncode != 0, output[-3000:]
    assert ("download jobs ask for mem_mb=32000, but the largest node of partition debug has 22000 MB. "
            "Lower set-resources.download.mem_mb") in output
    assert "SLURM run ID" not in output and cluster.queued_job_ids() == queued_before
    assert not (directory / "results").exists()


def test_a_partition_too_short_for_training_stops_the_run_naming_the_setting(cluster, tmp_path):
    directory = workflow_copy(tmp_path)
    stopped = profile_as_is(directory, cluster, REPO / "profiles" / "slurm", SBATCH_PARTITION="short")
    output = stopped.stderr + stopped.stdout
    assert stopped.returncode != 0, output[-3000:]
    assert f"partition short allows {SHORT_MINUTES} min" in output and "set-resources.train.runtime" in output
    assert "SLURM run ID" not in output and not (directory / "results").exists()


def records_of(jobs: list[dict], output: str) -> list[dict]:
    """The SLURM jobs a run submitted: the executor names every job after the run's ID."""
    return [job for job in jobs if job["Name"] == run_id(output)]


def test_a_failed_slurm_job_fails_the_workflow_and_shows_its_log(runs):
    failing = runs["failing"]
    output = failing.stderr + failing.stdout
    assert failing.returncode != 0, output[-3000:]
    assert f"Error in rule {FAILING_STEP}" in output
    assert FAILURE_MARK in output, "the failed job's log is shown"
    assert total_jobs(output) == 1, output[-3000:]
    retries = yaml.safe_load(PROFILE.read_text())["retries"]
    records = records_of(runs["jobs"], output)
    assert sorted(job["JobId"] for job in records) == sorted(submitted_job_ids(output))
    assert len(records) == 1 + retries, f"one try and {retries} retries of the failing job: {records}"
    # the job's step (srun) exits 1 when the Snakemake job inside it fails
    assert all(job["JobState"] == "FAILED" and job["ExitCode"] != "0:0" for job in records), records


def test_the_workflow_completes_every_job_on_slurm(runs):
    workflow = runs["workflow"]
    output = workflow.stderr + workflow.stdout
    assert workflow.returncode == 0, output[-5000:]
    records = records_of(runs["jobs"], output)
    remote, local = job_headers(output)
    assert FAILING_STEP in remote
    assert len(remote) + len(local) == total_jobs(output)
    assert sorted(job["JobId"] for job in records) == sorted(submitted_job_ids(output))
    assert len(records) == len(remote) and all(job["JobState"] == "COMPLETED" for job in records), records


def test_as_many_slurm_jobs_as_snakemake_jobs(runs):
    output = runs["workflow"].stderr + runs["workflow"].stdout
    records = records_of(runs["jobs"], output)
    _, local = job_headers(output)  # local jobs (the target rule) run once everything else is done
    assert total_jobs(output) == len(records) + len(local), "every job but local ones went to SLURM"
    assert all(job["ExitCode"] == "0:0" and job["Partition"] == "debug" for job in records), records


def test_nothing_is_left_to_do(runs):
    dry_run, summary = runs["dry_run"], runs["summary"]
    assert dry_run.returncode == 0, dry_run.stderr[-3000:]
    assert "Nothing to be done" in dry_run.stderr + dry_run.stdout
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
