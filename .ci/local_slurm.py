"""A single-node SLURM cluster on localhost, private to one directory, for testing profiles/slurm.

It runs Debian's `munge` and `slurm-wlm` (slurmctld + slurmd) as children of this process, with their own
munge socket, ports, spool and state directories under DIR, so it touches nothing system-wide and several
can run side by side. The node advertises fake GPUs (gres `gpu:v100:2`, devices that are empty files): SLURM
then schedules `--gpus=v100:1` requests for real, while the job runs on the CPU. No slurmdbd: job status comes
from `squeue` (MinJobAge 3600 s keeps finished jobs visible), so run Snakemake with
`--slurm-status-command squeue`.

    python .ci/local_slurm.py start DIR     # prints `export SLURM_CONF=...`; the cluster runs until `stop`
    python .ci/local_slurm.py stop DIR
    python .ci/local_slurm.py install       # apt-get install munge slurm-wlm (Debian, as root)

Tests use `LocalSlurm` as a context manager: leaving it (also on errors) cancels the jobs, stops the
daemons and kills every process that still carries this cluster's SLURM_CONF in its environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["munge", "slurm-wlm"]
DAEMONS = ["munged", "slurmctld", "slurmd"]
GPU_MODEL = "v100"
PARTITIONS = {"cpu": "ci_cpu", "gpu": "ci_gpu"}  # deliberately not the profile's defaults: tests the override


def install() -> None:
    """Debian's packages, if the daemons are missing (CI runs as root on a clean machine)."""
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], check=True, env=env)


def available() -> str | None:
    """None if a local cluster can start here, else why not."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their user)"
    missing = [d for d in DAEMONS if not (shutil.which(d) or Path("/usr/sbin", d).exists())]
    return f"missing {', '.join(missing)} (python .ci/local_slurm.py install)" if missing else None


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(n: int) -> list[int]:
    """n TCP ports free right now on localhost."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalSlurm:
    """One node (this host), two partitions (PARTITIONS), `gpus` fake V100s; state under `root`.

    The node declares `cpus` CPUs and `memory_mb` of memory whatever the hardware has, so jobs sized for a
    cluster node are accepted on a laptop (they then share its real cores).
    """

    def __init__(self, root: Path, cpus: int = 8, memory_mb: int = 256_000, gpus: int = 2):
        self.root = Path(root).resolve()
        self.conf = self.root / "etc" / "slurm.conf"
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.gpus = gpus
        self.procs: dict[str, subprocess.Popen] = {}

    # --- environment for clients (sbatch, squeue, snakemake) ---

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF and the srun shim; every process started with it is this cluster's."""
        path = f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(args, env=self.env, check=check, capture_output=True, text=True, timeout=60)

    # --- configuration ---

    def write_config(self) -> None:
        for d in ("etc", "bin", "dev", "munge", "state", "spool", "log", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o755)  # clients need to reach the socket; the key itself is 0600
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o600)
        ctld_port, slurmd_port = _free_ports(2)
        host = socket.gethostname()
        socket_path = self.root / "munge" / "munge.socket"
        lines = [
            "ClusterName=dpmra-ci",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={socket_path}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",  # no cgroups in CI containers
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",  # needed for --gpus
            "SelectTypeParameters=CR_CPU",  # memory is checked against RealMemory, not consumed
            "SlurmdParameters=config_overrides",  # trust the CPUs/memory below, not the hardware
            "GresTypes=gpu",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MinJobAge=3600",  # squeue shows finished jobs this long (>= 3x the first status check; tests look back)
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
            f"Gres=gpu:{GPU_MODEL}:{self.gpus} State=UNKNOWN",
            f"PartitionName={PARTITIONS['cpu']} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName={PARTITIONS['gpu']} Nodes={host} MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        # GPUs that are not there: the gres is scheduled and accounted, the job sees no device (each "device"
        # is an empty file; SLURM only needs one path per GPU).
        for i in range(self.gpus):
            (self.root / "dev" / f"gpu{i}").touch()
        devices = f"{self.root / 'dev'}/gpu[0-{self.gpus - 1}]" if self.gpus > 1 else f"{self.root / 'dev'}/gpu0"
        (self.root / "etc" / "gres.conf").write_text(f"NodeName={host} Name=gpu Type={GPU_MODEL} File={devices}\n")
        # snakemake-executor-plugin-slurm-jobstep runs each job through a nested `srun` with every SLURM_*
        # variable removed, SLURM_CONF included: srun would then look for /etc/slurm/slurm.conf. This
        # cluster's config is elsewhere, so jobs find an `srun` first on PATH that puts it back.
        srun = self.root / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun") or "/usr/bin/srun"} "$@"\n')
        srun.chmod(0o755)

    # --- lifecycle ---

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(
            [_daemon(name), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        (self.root / "run" / f"{name}.child").write_text(str(self.procs[name].pid))

    def start(self, timeout: float = 60) -> None:
        problem = available()
        if problem:
            raise RuntimeError(f"local SLURM unavailable: {problem}")
        self.write_config()
        munge = self.root / "munge"
        self._spawn(
            "munged", "--foreground", "--force", f"--socket={munge / 'munge.socket'}",
            f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'munged.seed'}", f"--log-file={self.root / 'log' / 'munged.log'}",
        )
        self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged socket")
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._wait(lambda: self.run("scontrol", "ping", check=False).stdout.count("is UP") > 0, timeout, "slurmctld")
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        self._wait(self._node_ready, timeout, "slurmd to register an idle node")

    def _node_ready(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.split()
        return bool(out) and all(state.rstrip("*") in ("idle", "mix", "alloc") for state in out)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; logs:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}; logs:\n{self.logs()}")

    def logs(self, tail: int = 40) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel jobs, stop the daemons, kill what they left (found by this cluster's SLURM_CONF)."""
        if self.conf.exists() and "slurmctld" in self._pids():
            self.run("scancel", "--full", "--user", str(os.getuid()), check=False)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.run("squeue", "-h", "-t", "R,CG,PD", check=False).stdout.strip():
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            pid = self._pids().get(name)
            if pid:
                _terminate(pid)
        for pid in self.leftovers():
            _terminate(pid)
        for name in DAEMONS:
            (self.root / "run" / f"{name}.child").unlink(missing_ok=True)

    def _pids(self) -> dict[str, int]:
        """Daemons this cluster started (from this process or an earlier `start`)."""
        pids = {name: proc.pid for name, proc in self.procs.items() if proc.poll() is None}
        for name in DAEMONS:
            path = self.root / "run" / f"{name}.child"
            if name not in pids and path.exists():
                pid = int(path.read_text())
                if _alive(pid) and self.conf_of(pid):
                    pids[name] = pid
        return pids

    def conf_of(self, pid: int) -> bool:
        """Whether process `pid` runs with this cluster's SLURM_CONF (then it is ours)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"SLURM_CONF={self.conf}".encode() in environ

    def leftovers(self) -> list[int]:
        """Live processes carrying this cluster's SLURM_CONF, other than this one: daemons, slurmstepd, jobs."""
        own = os.getpid()
        return [
            int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != own and self.conf_of(int(p.name)) and _alive(int(p.name))
        ]

    def __enter__(self) -> "LocalSlurm":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped


def _terminate(pid: int, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaps our own children."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass
        if not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def main(argv: list[str]) -> int:
    if argv[:1] == ["install"]:
        install()
        return 0
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    cluster = LocalSlurm(Path(argv[1]))
    if argv[0] == "start":
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
