"""GPU claims: N simulated devices (no GPU needed), separate processes as real jobs are."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from advseg import devices
from advseg.devices import GpuClaim, claim_device, claim_gpu, count_gpus

SRC = Path(devices.__file__).resolve().parents[1]

# A job: claim a GPU, record what it got and when, hold it, record the release.
JOB = """
import json, os, sys, time
from advseg.devices import claim_gpu
record, hold = sys.argv[1], float(sys.argv[2])
launched = time.monotonic()
with claim_gpu(poll_seconds=0.01) as claim:
    start = time.monotonic()
    with open(record + ".claimed", "w") as out:
        json.dump({"device": claim.device, "source": claim.source,
                   "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}, out)
    time.sleep(hold)
    end = time.monotonic()
with open(record, "w") as out:
    json.dump({"device": claim.device, "launched": launched, "start": start, "end": end}, out)
"""


def start_job(record: Path, hold: float, lock_dir: Path, **env: str) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", devices.GPU_COUNT_VARIABLE)}
    environment.update({"PYTHONPATH": str(SRC), devices.LOCK_DIR_VARIABLE: str(lock_dir), **env})
    return subprocess.Popen([sys.executable, "-c", JOB, str(record), str(hold)], env=environment)


def wait_for(path: Path, seconds: float = 20) -> dict:
    deadline = time.monotonic() + seconds
    while not path.exists() or not path.stat().st_size:
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)
    return json.loads(path.read_text())


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "SLURM_JOB_ID", devices.GPU_COUNT_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(devices.LOCK_DIR_VARIABLE, str(tmp_path / "locks"))
    return tmp_path


def test_concurrent_jobs_never_share_a_device(clean_env):
    jobs = [start_job(clean_env / f"job{index}", 0.3, clean_env / "locks", ADVSEG_GPUS="2") for index in range(6)]
    for job in jobs:
        assert job.wait(60) == 0
    records = [json.loads((clean_env / f"job{index}").read_text()) for index in range(6)]
    claims = [json.loads((clean_env / f"job{index}.claimed").read_text()) for index in range(6)]
    assert all(claim["visible"] == claim["device"] and claim["source"] == "lock" for claim in claims)
    assert {record["device"] for record in records} == {"0", "1"}
    for device in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in records if r["device"] == device)
        for (_, previous_end), (next_start, _) in zip(spans, spans[1:]):
            assert next_start >= previous_end, f"two jobs held GPU {device} at once: {spans}"


def test_a_killed_jobs_device_is_free_again(clean_env):
    holder = start_job(clean_env / "holder", 600, clean_env / "locks", ADVSEG_GPUS="1")
    try:
        assert wait_for(clean_env / "holder.claimed")["device"] == "0"
        waiter = start_job(clean_env / "waiter", 0, clean_env / "locks", ADVSEG_GPUS="1")
        time.sleep(0.5)
        assert not (clean_env / "waiter.claimed").exists(), "a second job got the only GPU while it was held"
        assert waiter.poll() is None
        holder.send_signal(signal.SIGKILL)
        assert wait_for(clean_env / "waiter.claimed")["device"] == "0"
        assert waiter.wait(30) == 0
    finally:
        holder.kill()
        holder.wait()


def test_only_the_listed_devices_are_claimed(clean_env):
    jobs = [start_job(clean_env / f"job{index}", 1.0, clean_env / "locks",
                      ADVSEG_GPUS="8", CUDA_VISIBLE_DEVICES="5,7") for index in range(2)]
    for job in jobs:
        assert job.wait(60) == 0
    devices_used = {json.loads((clean_env / f"job{index}").read_text())["device"] for index in range(2)}
    assert devices_used == {"5", "7"}


def test_one_visible_device_is_used_as_given(clean_env, monkeypatch):
    monkeypatch.setenv("ADVSEG_GPUS", "8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-3f2a")
    with claim_gpu(poll_seconds=0.01) as claim:
        assert claim == GpuClaim("GPU-3f2a", "environment")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-3f2a"
    assert not (clean_env / "locks").exists(), "nothing to choose, so nothing is locked"


@pytest.mark.parametrize("hidden", ["", "-1", "NoDevFiles"])
def test_hidden_devices_mean_the_cpu(clean_env, monkeypatch, hidden):
    monkeypatch.setenv("ADVSEG_GPUS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    with claim_gpu(poll_seconds=0.01) as claim:
        assert claim == GpuClaim(None, "none")


def test_a_slurm_job_given_no_gpu_does_not_take_one(clean_env, monkeypatch):
    monkeypatch.setenv("ADVSEG_GPUS", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    with claim_gpu(poll_seconds=0.01) as claim:
        assert claim == GpuClaim(None, "none")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_slurm_allocations_do_not_block_each_other(clean_env, monkeypatch):
    """Device cgroups number every allocation's GPUs from 0: the same name is not the same GPU."""
    holder = start_job(clean_env / "holder", 600, clean_env / "locks", SLURM_JOB_ID="7", CUDA_VISIBLE_DEVICES="0,1")
    try:
        assert wait_for(clean_env / "holder.claimed")["device"] == "0"
        monkeypatch.setenv("SLURM_JOB_ID", "8")
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
        with claim_gpu(poll_seconds=0.01) as claim:
            assert claim == GpuClaim("0", "lock")
        monkeypatch.setenv("SLURM_JOB_ID", "7")
        with claim_gpu(poll_seconds=0.01) as claim:
            assert claim == GpuClaim("1", "lock"), "jobs of one allocation share its GPUs"
    finally:
        holder.kill()
        holder.wait()


def test_claim_narrows_and_restores_the_environment(clean_env, monkeypatch):
    monkeypatch.setenv("ADVSEG_GPUS", "3")
    with claim_gpu(poll_seconds=0.01) as first:
        assert first == GpuClaim("0", "lock")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID", "nvidia-smi's numbering"
        with claim_gpu(poll_seconds=0.01) as nested:
            assert nested == GpuClaim("0", "environment"), "a nested claim keeps the job's GPU"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and "CUDA_DEVICE_ORDER" not in os.environ
    with claim_gpu(poll_seconds=0.01) as again:
        assert again.device == "0", "released on exit"


def test_claiming_after_cuda_started_is_refused(clean_env, monkeypatch):
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setenv("ADVSEG_GPUS", "2")
    with pytest.raises(RuntimeError, match="before CUDA is initialised"):
        with claim_gpu(poll_seconds=0.01):
            pass


def test_gpus_are_counted_without_cuda(clean_env, monkeypatch):
    bin_dir = clean_env / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    proc = clean_env / "proc"
    for bus in ("0000:17:00.0", "0000:65:00.0", "0000:b3:00.0"):
        (proc / bus).mkdir(parents=True)
    assert count_gpus(proc) == 3, "the driver's /proc entries when nvidia-smi is missing"
    assert count_gpus(clean_env / "absent") == 0
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)'\n"
                   "echo '  MIG 3g.40gb     Device  0: (UUID: MIG-bbbb)'\n"
                   "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)'\n")
    smi.chmod(0o755)
    assert count_gpus(proc) == 2, "nvidia-smi -L lists the GPUs this machine lets us use"
    monkeypatch.setenv("ADVSEG_GPUS", "5")
    assert count_gpus(proc) == 5


def test_a_bad_gpu_count_names_the_variable(clean_env, monkeypatch):
    monkeypatch.setenv("ADVSEG_GPUS", "two")
    with pytest.raises(ValueError, match="ADVSEG_GPUS"):
        count_gpus()


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="a CUDA device is present")
def test_claim_device_is_cpu_without_cuda(clean_env):
    with claim_device(poll_seconds=0.01) as device:
        assert device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="a CUDA device is present")
def test_claim_device_within_a_claim_is_cuda_0_or_cpu(clean_env, monkeypatch):
    monkeypatch.setenv("ADVSEG_GPUS", "2")
    with claim_gpu(poll_seconds=0.01):
        with claim_device(poll_seconds=0.01) as device:
            expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
            assert device == expected


def test_local_gpu_profile_gives_each_job_its_own_gpu(clean_env):
    """`snakemake --profile profiles/local-gpu` on a (simulated) two-GPU workstation."""
    workflow = clean_env / "workflow"
    workflow.mkdir()
    job = clean_env / "job.py"
    job.write_text(JOB)
    (workflow / "Snakefile").write_text(
        "rule all:\n"
        "    input: expand('done/{i}', i=range(5))\n"
        "rule train:\n"
        "    output: 'done/{i}'\n"
        "    resources: gpu=1\n"
        f"    shell: '{sys.executable} {job} {{output}} 0.3'\n")
    repo = SRC.parent
    environment = {key: value for key, value in os.environ.items() if key not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    environment.update({"PYTHONPATH": str(SRC), "ADVSEG_GPUS": "2", devices.LOCK_DIR_VARIABLE: str(clean_env / "locks")})
    result = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--profile", str(repo / "profiles" / "local-gpu")],
                            cwd=workflow, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((workflow / "done" / str(index)).read_text()) for index in range(5)]
    assert {record["device"] for record in records} <= {"0", "1"}
    # from process start, before the lock: Snakemake itself never runs more GPU jobs than GPUs
    events = sorted([(r["launched"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = [sum(step for _, step in events[: index + 1]) for index in range(len(events))]
    assert max(running) <= 2, "more jobs than GPUs ran at once"
    for device in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in records if r["device"] == device)
        for (_, previous_end), (next_start, _) in zip(spans, spans[1:]):
            assert next_start >= previous_end, f"two jobs held GPU {device} at once: {spans}"
