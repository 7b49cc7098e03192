"""A single-node SLURM cluster for the `slurm` test: Debian's slurm-wlm and munge, started by hand.

CI machines have no systemd, so the daemons run in the foreground as children of the test and are
stopped by PID. Everything that would touch a real cluster is refused: an existing slurm.conf we
did not write, or daemons that are already running, make `why_not` return a reason to skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")  # job steps strip SLURM_CONF, so it must live at the default path
MARKER = "# written by resm-3h tests/slurm_cluster.py"
PARTITION = "debug"
STATE = Path("/var/spool/resm-slurm")
PACKAGES = ["slurm-wlm", "munge"]


def why_not() -> str | None:
    """Why a throwaway cluster cannot be started here, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root, to install slurm-wlm and munge and start their daemons"
    if CONF.exists() and MARKER not in CONF.read_text(errors="replace"):
        return f"{CONF} exists and was not written by this test: not overwriting a real cluster's config"
    for daemon in ("slurmctld", "slurmd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode == 0:
            return f"{daemon} is already running"
    if not all(shutil.which(cmd) for cmd in ("slurmctld", "slurmd", "munged")) and not shutil.which("apt-get"):
        return "slurm-wlm and munge are not installed, and there is no apt-get to install them"
    return None


def install() -> None:
    """apt-get install the daemons (about 10 s); the package index is refreshed only when it is needed."""
    if all(shutil.which(cmd) for cmd in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n{done.stdout[-2000:]}{done.stderr}")


def write_config(cpus: int, memory_mb: int) -> None:
    """One node named like this host (slurmd insists), no accounting, no cgroups (v2 in containers)."""
    host = socket.gethostname().split(".")[0]
    for sub in ("ctld", "d", "log"):
        (STATE / sub).mkdir(parents=True, exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(f"""{MARKER}
ClusterName=resm-ci
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={STATE}/ctld
SlurmdSpoolDir={STATE}/d
SlurmctldPidFile={STATE}/slurmctld.pid
SlurmdPidFile={STATE}/slurmd.pid
SlurmctldLogFile={STATE}/log/slurmctld.log
SlurmdLogFile={STATE}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
MinJobAge=600
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")


def detected_node() -> tuple[int, int]:
    """(CPUs, RealMemory MB) as slurmd itself sees this host: a node configured with more is drained."""
    done = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
    fields = dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)
    return int(fields["CPUs"]), int(fields["RealMemory"])


def _wait_for(check, what: str, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{proc.args[0]} exited with {proc.returncode} while waiting for {what}; logs in {STATE / 'log'}"
                )
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {STATE / 'log'}")


def _node_ready() -> bool:
    done = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%t"], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() in {"idle", "mix", "alloc"}


@contextmanager
def cluster(memory_fraction: float = 0.75):
    """Install, configure and start munged, slurmctld and slurmd; stop them by PID on the way out."""
    install()
    cpus, memory_mb = detected_node()
    procs: list[subprocess.Popen] = []
    logs = []

    def start(*args: str) -> None:
        logs.append(open(STATE / "log" / f"{args[0]}.err", "w"))  # noqa: SIM115 (closed when the cluster stops)
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=logs[-1]))

    try:
        write_config(cpus, int(memory_mb * memory_fraction))
        if not Path("/etc/munge/munge.key").exists():  # the Debian package makes one; a trimmed image may not
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
            shutil.chown("/etc/munge/munge.key", "munge", "munge")
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        # munged refuses to run as root without --force; -F and -D keep each daemon our child, its PID ours
        start("munged", "-F", "--force")
        _wait_for(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0, "munged", 30, procs)
        start("slurmctld", "-D", "-c", "-i")
        start("slurmd", "-D")
        _wait_for(_node_ready, f"partition {PARTITION} to be idle", 60, procs)
        yield PARTITION
    finally:
        if procs:
            subprocess.run(["scancel", "--partition", PARTITION], capture_output=True)
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        # A config naming a stopped controller makes every later Snakemake run, local ones too, wait
        # 9 s: the SLURM executor plugin asks `scontrol show config` at start-up. Leave none behind.
        if CONF.exists() and MARKER in CONF.read_text(errors="replace"):
            CONF.unlink()
