"""A real slurm cluster on this host for the tests: munged, slurmctld and one slurmd per node (each
``slurmd -N NAME`` on its own port, so that two "nodes" share this machine), every file they
write (key, config, state, spool, logs) in one folder, every daemon in the foreground as a child
of the test process and stopped by its pid.

Debian's ``slurm-wlm`` and ``munge`` packages (slurm 22.05) give the daemons; it comes up in a few
seconds. ``SlurmCluster.start`` raises ``SlurmUnavailable`` with the reason where they are missing
or do not come up; the ``slurm_cluster`` fixture (tests/conftest.py) turns that into a skip,
or a failure where ``L2L_REQUIRE_SLURM=1`` (CI, once it has installed the packages).

    cluster = SlurmCluster(tmp_path, nodes=2)
    cluster.start()
    subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env())
    cluster.wait_idle(timeout=60)
    cluster.stop()
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
INSTALL = "apt-get install slurm-wlm munge, as root"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be run here; the message says why."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.is_file()), None)


class SlurmCluster:
    """``nodes`` nodes (``n1``, ``n2``, ...) of ``cpus`` CPUs each, in partition ``debug``."""

    def __init__(self, root: str | Path, nodes: int = 2, cpus: int = 1):
        self.root = Path(root)
        self.nodes = [f"n{i}" for i in range(1, nodes + 1)]
        self.cpus = cpus
        self.conf = self.root / "slurm.conf"
        self._procs: dict[str, subprocess.Popen] = {}

    def env(self, base: dict | None = None) -> dict:
        """An environment whose slurm commands talk to this cluster."""
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ start and stop
    def start(self, timeout: float = 30) -> None:
        paths = {name: _find(name) for name in (*DAEMONS, *CLIENTS)}
        missing = [name for name, path in paths.items() if path is None]
        if missing:
            raise SlurmUnavailable(f"slurm is not installed ({', '.join(missing)} not found; "
                                   f"{INSTALL})")
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd runs jobs as their users and must run as root; "
                                   "these tests start their own slurm cluster only as root")
        munge = self.root / "munge"
        for folder in (munge, self.root / "state", self.root / "log",
                       *(self.root / "spool" / node for node in self.nodes)):
            folder.mkdir(parents=True, exist_ok=True)
        munge.chmod(0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._write_conf(munge / "munge.sock")
        log = self.root / "log"
        try:
            self._spawn("munged", [paths["munged"], "--foreground", "--force",
                                   f"--socket={munge / 'munge.sock'}", f"--key-file={key}",
                                   f"--pid-file={munge / 'munged.pid'}",
                                   f"--seed-file={munge / 'munged.seed'}",
                                   f"--log-file={log / 'munged.log'}"])
            self._wait(lambda: (munge / "munge.sock").exists(), 10, "munged made no socket")
            self._spawn("slurmctld", [paths["slurmctld"], "-D", "-f", str(self.conf)])
            self._wait(self._controller_answers, timeout, "slurmctld does not answer")
            for node in self.nodes:
                self._spawn(f"slurmd-{node}", [paths["slurmd"], "-D", "-N", node,
                                               "-f", str(self.conf)])
            self._wait(self._all_idle, timeout, "the nodes did not come up idle")
        except SlurmUnavailable:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel this cluster's jobs, then stop its daemons (by pid: slurmd last after jobs,
        munged last of all)."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            subprocess.run([_find("scancel") or "scancel", f"--user={getpass.getuser()}"],
                           env=self.env(), capture_output=True, timeout=30)
            self._wait(lambda: not self.squeue(), 30, "", raise_on_timeout=False)
        for name in [*(f"slurmd-{node}" for node in self.nodes), "slurmctld", "munged"]:
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    # ------------------------------------------------------------------ queries
    def squeue(self, *jobs: str) -> list[str]:
        """``JOBID STATE`` of the jobs still in the queue (these jobs, or all)."""
        cmd = ["squeue", "--noheader", "--array", "--format=%i %T"]
        cmd += [f"--jobs={','.join(jobs)}"] if jobs else []
        done = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=30)
        return [line.strip() for line in done.stdout.splitlines() if line.strip()] \
            if done.returncode == 0 else []

    def wait_jobs(self, *jobs: str, timeout: float) -> None:
        """Until slurm has ended these jobs (every task of an array), or AssertionError."""
        deadline = time.monotonic() + timeout
        while self.squeue(*jobs):
            if time.monotonic() > deadline:
                raise AssertionError(f"slurm jobs {', '.join(jobs)} still queued or running "
                                     f"after {timeout:.0f} s: {self.squeue(*jobs)}")
            time.sleep(1)

    def logs(self, lines: int = 20) -> str:
        """The tail of every daemon's log, for a failure message."""
        text = []
        for path in sorted((self.root / "log").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(text)

    # ------------------------------------------------------------------ internals
    def _write_conf(self, munge_socket: Path) -> None:
        host = socket.gethostname().split(".")[0]
        user = getpass.getuser()
        root = self.root
        lines = [
            "ClusterName=l2ltest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmUser={user}", f"SlurmdUser={user}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}/%n",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd-%n.log'}",
            # no cgroups in a container: processes tracked by their parents, tasks not bound
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU", "SlurmdParameters=config_overrides",
            "ReturnToService=2", "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "MinJobAge=3600", "KillWait=5",
        ]
        lines += [f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} "
                  f"CPUs={self.cpus} State=UNKNOWN" for node in self.nodes]
        lines.append(f"PartitionName=debug Nodes={','.join(self.nodes)} Default=YES "
                     "MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.stdout", "w")
        self._procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                             env=self.env(), start_new_session=True)
        out.close()

    def _controller_answers(self) -> bool:
        return subprocess.run(["scontrol", "ping"], env=self.env(), capture_output=True,
                              text=True, timeout=10).stdout.count("UP") > 0

    def _all_idle(self) -> bool:
        done = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N %T"], env=self.env(),
                              capture_output=True, text=True, timeout=10)
        states = dict(line.split() for line in done.stdout.splitlines() if line.strip())
        return sorted(states) == sorted(self.nodes) and set(states.values()) == {"idle"}

    def _wait(self, ready, timeout: float, what: str, raise_on_timeout: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, proc in self._procs.items() if proc.poll() is not None]
            if dead and raise_on_timeout:
                raise SlurmUnavailable(f"{', '.join(dead)} exited ({what}):\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        if raise_on_timeout:
            raise SlurmUnavailable(f"{what} within {timeout:.0f} s:\n{self.logs()}")
