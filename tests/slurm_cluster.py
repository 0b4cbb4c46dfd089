"""A one-node SLURM cluster on localhost, private to one test session.

Debian's ``slurm-wlm`` and ``munge`` are started as plain processes (no systemd, no
slurmdbd) from a private directory: their own munge key and socket, state, spool,
logs, free ports and two fake GPUs (character devices that slurmd counts by their
files). Nothing system-wide is written: the only consumer that ignores ``SLURM_CONF``
is the ``srun`` that the executor plugin's job step runs inside each job (it drops
every ``SLURM_*`` variable and reads ``/etc/slurm/slurm.conf``), so slurmd and
therefore every job run in a private mount namespace where ``/etc/slurm`` is the
private directory. Where mount namespaces are unavailable and ``/etc/slurm/slurm.conf``
does not exist, a link to the private config is put there and removed on stop.

Every daemon is a child of this process, started in the foreground, and stopped by
its PID. Jobs' final states come from ``jobcomp/filetxt`` (no accounting database).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from loopback import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun", "munge")
SYSTEM_CONF_DIR = Path("/etc/slurm")
NODE = "localhost"


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    missing = [name for name in CLIENTS if shutil.which(name) is None]
    missing += [name for name in DAEMONS if _daemon_path(name) is None]
    if missing:
        return (f"SLURM/munge programs not installed ({', '.join(missing)}); "
                "`apt-get install slurm-wlm munge` (as .ci/run does) to run this test")
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs; run the suite as root (as .ci/run does)"
    if not _mount_namespaces_work() and (SYSTEM_CONF_DIR / "slurm.conf").exists():
        return (f"{SYSTEM_CONF_DIR / 'slurm.conf'} belongs to another cluster and no private "
                "mount namespace can hide it (unshare --mount failed)")
    return None


def _daemon_path(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _mount_namespaces_work() -> bool:
    if shutil.which("unshare") is None or not SYSTEM_CONF_DIR.is_dir():
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In the child before exec: send it ``signum`` when this process dies, even if no teardown runs."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def parse_jobcomp(text: str) -> list[dict[str, str]]:
    """One dict per finished job from a ``jobcomp/filetxt`` file (``Key=value`` fields)."""
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.startswith("JobId=")]


class LocalSlurmCluster:
    """Start with :meth:`start`, always :meth:`stop` (a pytest fixture's teardown)."""

    def __init__(self, cpus: int = 4, memory_mb: int = 65536, gpus: int = 2, min_job_age: int = 300,
                 partitions: dict[str, str] | None = None):
        """``partitions``: more partitions on the node besides the default one, ``debug``, e.g.
        ``{"short": "MaxTime=30"}`` (name: slurm.conf settings)."""
        self.cpus, self.memory_mb, self.gpus, self.min_job_age = cpus, memory_mb, gpus, min_job_age
        self.partitions = partitions or {}
        self.root = Path(tempfile.mkdtemp(prefix="advseg-slurm-"))
        self.conf_dir = self.root / "etc"
        self.conf = self.conf_dir / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.log"
        self.logs = self.root / "log"
        self.socket = self.root / "munge" / "munge.socket"
        self.processes: dict[str, subprocess.Popen] = {}
        self.namespaced = _mount_namespaces_work()
        self._linked_system_conf = False

    @property
    def env(self) -> dict[str, str]:
        """The environment that points SLURM's client commands at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ----------------------------------------------------------------- start
    def start(self, timeout: float = 60) -> None:
        try:
            self._write_files()
            self._start_munge()
            self._spawn("slurmctld", [_daemon_path("slurmctld"), "-D", "-i"])
            self._wait_for(lambda: self._client("scontrol", "ping").returncode == 0, timeout, "slurmctld")
            self._start_slurmd()
            self._wait_for(self._node_is_idle, timeout, "the node to become idle")
        except BaseException:
            self.stop()
            raise

    def _write_files(self) -> None:
        os.chmod(self.root, 0o755)  # munged wants its socket's directory reachable by all
        for name in ("etc", "state", "spool", "log", "munge", "key", "dev"):
            (self.root / name).mkdir()
        os.chmod(self.root / "key", 0o700)
        key = self.root / "key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        devices = [self.root / "dev" / f"fakegpu{index}" for index in range(self.gpus)]
        for device in devices:
            os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
        ctld_port, slurmd_port = free_port(), free_port()
        settings = {
            "ClusterName": "advsegtest", "SlurmctldHost": NODE,
            "SlurmctldPort": ctld_port, "SlurmdPort": slurmd_port,
            "SlurmUser": "root", "SlurmdUser": "root",
            "AuthType": "auth/munge", "CredType": "cred/munge", "AuthInfo": f"socket={self.socket}",
            "StateSaveLocation": self.root / "state", "SlurmdSpoolDir": self.root / "spool",
            "SlurmctldPidFile": self.root / "slurmctld.pid", "SlurmdPidFile": self.root / "slurmd.pid",
            "SlurmctldLogFile": self.logs / "slurmctld.log", "SlurmdLogFile": self.logs / "slurmd.log",
            "PlugStackConfig": self.conf_dir / "plugstack.conf",
            "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none", "MpiDefault": "none",
            "JobAcctGatherType": "jobacct_gather/none", "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/filetxt", "JobCompLoc": self.jobcomp,
            "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_Core_Memory",
            # the node's CPUs and memory are what this file says, not what the machine has
            "SlurmdParameters": "config_overrides",
            "GresTypes": "gpu", "ReturnToService": 2,
            # a job without --mem would otherwise take the whole node's memory
            "DefMemPerCPU": 1000,
            # squeue reports a finished job for this long; the executor polls within it
            "MinJobAge": self.min_job_age,
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines.append(f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
                     f"Gres=gpu:{self.gpus} State=UNKNOWN")
        lines.append(f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP")
        lines += [f"PartitionName={name} Nodes={NODE} {settings} State=UP" for name, settings in self.partitions.items()]
        self.conf.write_text("\n".join(lines) + "\n")
        (self.conf_dir / "gres.conf").write_text(
            "".join(f"NodeName={NODE} Name=gpu File={device}\n" for device in devices))
        (self.conf_dir / "plugstack.conf").write_text("")

    def _start_munge(self) -> None:
        self._spawn("munged", [_daemon_path("munged"), "--foreground", f"--socket={self.socket}",
                               f"--key-file={self.root / 'key' / 'munge.key'}",
                               f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                               f"--log-file={self.logs / 'munged.log'}",
                               f"--seed-file={self.root / 'key' / 'munged.seed'}"])
        self._wait_for(lambda: subprocess.run(["munge", "-S", str(self.socket), "-n"],
                                              capture_output=True).returncode == 0, 30, "munged")

    def _start_slurmd(self) -> None:
        slurmd = [_daemon_path("slurmd"), "-D", "-N", NODE]
        if self.namespaced:
            # `mount -n`: no entry in the host's /run/mount; the namespace dies with slurmd
            script = 'mount -n --bind "$0" /etc/slurm && exec "$@"'
            command = ["unshare", "--mount", "--propagation", "private",
                       "sh", "-c", script, str(self.conf_dir), *slurmd]
        else:
            SYSTEM_CONF_DIR.mkdir(exist_ok=True)
            (SYSTEM_CONF_DIR / "slurm.conf").symlink_to(self.conf)
            self._linked_system_conf = True
            command = slurmd
        self._spawn("slurmd", command)

    def _spawn(self, name: str, command: list) -> None:
        log = open(self.logs / f"{name}.out", "w")
        self.processes[name] = subprocess.Popen([str(part) for part in command], env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                preexec_fn=die_with_parent)
        log.close()

    def _node_is_idle(self) -> bool:
        states = self._client("sinfo", "--noheader", "--format=%T", f"--nodes={NODE}").stdout.split()
        return set(states) == {"idle"}  # one line per partition

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [name for name, process in self.processes.items() if process.poll() is not None]
            if dead or time.monotonic() > deadline:
                problem = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout:.0f} s"
                raise RuntimeError(f"waiting for {what}: {problem}\n{self.log_tail()}")
            time.sleep(0.2)

    # ------------------------------------------------------------- queries
    def _client(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=30)

    def queued_job_ids(self) -> list[str]:
        result = self._client("squeue", "--noheader", "--format=%i")
        return result.stdout.split()

    def finished_jobs(self) -> list[dict[str, str]]:
        """Every job that has ended, with ``JobId``, ``Name``, ``JobState``, ``ExitCode``, ..."""
        return parse_jobcomp(self.jobcomp.read_text()) if self.jobcomp.exists() else []

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.logs.glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------ stop
    def stop(self, timeout: float = 20) -> None:
        """Cancel what is left, end every daemon this object started (by PID), remove its files."""
        try:
            if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
                jobs = self.queued_job_ids()
                if jobs:
                    self._client("scancel", *jobs)
                    deadline = time.monotonic() + timeout
                    while self.queued_job_ids() and time.monotonic() < deadline:
                        time.sleep(0.5)
            for name in ("slurmd", "slurmctld", "munged"):
                process = self.processes.get(name)
                if process is None or process.poll() is not None:
                    continue
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
        finally:
            if self._linked_system_conf:
                (SYSTEM_CONF_DIR / "slurm.conf").unlink(missing_ok=True)
                self._linked_system_conf = False
            shutil.rmtree(self.root, ignore_errors=True)

    def running_daemons(self) -> list[int]:
        """PIDs of this cluster's daemons that are still alive (empty after :meth:`stop`)."""
        return [process.pid for process in self.processes.values() if process.poll() is None]
