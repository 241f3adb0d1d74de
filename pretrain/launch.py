"""Command lines that start the training workers: the ``deepspeed`` launcher (default) or ``torchrun``.

``python -m pretrain train`` prepares everything in one process (checks, packing, run dir), then
starts ``nproc`` workers per node running ``python -m pretrain.worker SPEC.json``. Equivalent
hand-written launches, for reference::

    # one node, 8 GPUs (or 2 CPU processes with --num_gpus 2)
    deepspeed --num_gpus 8 --master_port 29500 --no_local_rank --module pretrain.worker SPEC.json
    torchrun --nproc_per_node 8 --master_port 29500 -m pretrain.worker SPEC.json

    # several nodes, from node 0, over passwordless ssh (pdsh): a hostfile of "host slots=N" lines
    deepspeed --hostfile hosts.txt --num_nodes 2 --num_gpus 8 --master_addr node0 --module pretrain.worker SPEC.json

    # several nodes without ssh: the same command on every node, each with its own rank
    deepspeed --hostfile hosts.txt --no_ssh --node_rank $R --master_addr node0 --master_port 29500 ...
    torchrun --nnodes 2 --node_rank $R --nproc_per_node 8 --master_addr node0 --master_port 29500 -m pretrain.worker SPEC.json

Example::

    worker_command(LaunchSettings(nproc=2), Path("run/logs/worker_spec.node0.json"))[-2:]
    # ['pretrain.worker', 'run/logs/worker_spec.node0.json']
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zhllama import REPO_ROOT
from zhllama.cli import Interrupted, UserError

WORKER_MODULE = "pretrain.worker"


@dataclass
class LaunchSettings:
    """How the workers are started (the ``launch`` part of the training config)."""

    nproc: int = 2
    """Worker processes per node (GPUs per node; on CPU, processes)."""
    launcher: Literal["deepspeed", "torchrun"] = "deepspeed"
    """``deepspeed`` (the DeepSpeed launcher) or ``torchrun`` (PyTorch's elastic launcher)."""
    num_nodes: int = 1
    """Nodes taking part; more than 1 needs ``master_addr`` and, with the deepspeed launcher, a ``hostfile``."""
    node_rank: int = 0
    """This node's rank in ``[0, num_nodes)``; used when every node runs its own launcher (torchrun, or ``no_ssh``)."""
    master_addr: str = "127.0.0.1"
    """Address of node 0, where the process group meets."""
    master_port: int = 29500
    """TCP port on node 0 for the rendezvous."""
    hostfile: Path | None = None
    """DeepSpeed hostfile (``host slots=N`` per line) for several nodes."""
    no_ssh: bool = False
    """DeepSpeed launcher on every node (with ``node_rank``) instead of pdsh/ssh from node 0."""
    malloc_tuning: bool = True
    """Set glibc's ``MALLOC_*`` variables in the workers (big step buffers stay in the heap; see :data:`MALLOC_ENV`;
    ``bench/train.py``: half the page faults, identical losses, faster)."""
    stop_grace_seconds: float = 30.0
    """After forwarding SIGINT/SIGTERM, how long the workers get to exit before they are killed."""

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise ValueError(f"launch.nproc must be >= 1, got {self.nproc}")
        if self.num_nodes < 1 or not 0 <= self.node_rank < self.num_nodes:
            raise ValueError(f"launch.node_rank must be in [0, {self.num_nodes}), got {self.node_rank}")
        if not 0 < self.master_port < 65536:
            raise ValueError(f"launch.master_port must be a TCP port, got {self.master_port}")

    @property
    def world_size(self) -> int:
        """Total worker processes: ``nproc * num_nodes``."""
        return self.nproc * self.num_nodes


def _deepspeed_executable() -> list[str]:
    # The `deepspeed` console script installed beside this Python, else its module (same program).
    exe = Path(sys.executable).with_name("deepspeed")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("deepspeed")
    return [found] if found else [sys.executable, "-m", "deepspeed.launcher.runner"]


def worker_command(launch: LaunchSettings, spec_path: Path) -> list[str]:
    """The argv that starts this node's workers on ``spec_path`` (see the module docstring)."""
    if launch.launcher == "torchrun":
        return [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", str(launch.num_nodes), "--node_rank", str(launch.node_rank),
            "--nproc_per_node", str(launch.nproc),
            "--master_addr", launch.master_addr, "--master_port", str(launch.master_port),
            "-m", WORKER_MODULE, str(spec_path),
        ]
    cmd = _deepspeed_executable()
    if launch.num_nodes > 1:
        if launch.hostfile is None:
            raise UserError("launch.num_nodes > 1 with the deepspeed launcher needs launch.hostfile "
                            "(lines 'host slots=N'); or use launch.launcher=torchrun on every node")
        if not Path(launch.hostfile).is_file():
            raise UserError(f"hostfile not found: {launch.hostfile}")
        cmd += ["--hostfile", str(launch.hostfile), "--num_nodes", str(launch.num_nodes)]
        if launch.no_ssh:
            cmd += ["--no_ssh", "--node_rank", str(launch.node_rank)]
    cmd += [
        "--num_gpus", str(launch.nproc),
        "--master_addr", launch.master_addr, "--master_port", str(launch.master_port),
        "--no_local_rank", "--module", WORKER_MODULE, str(spec_path),
    ]
    return cmd


#: glibc malloc settings for the workers: without them every step's large buffers are returned to
#: the OS and faulted in again (~245k page faults/s per CPU worker). Values: mmap only above 32 MiB
#: (glibc's maximum), never trim the heap below 1 GiB of free space, grow it 64 MiB at a time.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
              "MALLOC_TOP_PAD_": str(64 << 20)}


def worker_env(base: dict[str, str] | None = None, cuda: bool | None = None,
               malloc_tuning: bool = False) -> dict[str, str]:
    """Environment for the workers: repo importable, one OpenMP thread each, CPU accelerator without CUDA,
    and with ``malloc_tuning`` the :data:`MALLOC_ENV` settings (values already set are kept)."""
    env = dict(os.environ if base is None else base)
    if malloc_tuning:
        for key, value in MALLOC_ENV.items():
            env.setdefault(key, value)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes x all-cores threads would oversubscribe the CPU
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def run_workers(cmd: list[str], env: dict[str, str], cwd: str | None = None, grace_seconds: float = 30.0) -> int:
    """Run the launcher command ``cmd`` and wait; on SIGINT/SIGTERM/SIGHUP stop *every* worker, then raise.

    The launcher runs in its own process group, so a terminal's Ctrl-C reaches only this process,
    which forwards the signal to that group and to every descendant (torchrun puts each worker in
    a session of its own), waits up to ``grace_seconds`` for all of them to exit, kills what is
    left, and raises :class:`Interrupted`. Invariant: when this returns or raises, no process it
    started is still running. Returns the launcher's exit status.
    """
    import psutil

    proc = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        _signal_tree(proc.pid, signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    # Workers of a launcher that exited (or was told to stop) must not outlive this call.
    left = _descendants_and_group(proc.pid)
    if left:
        _, alive = psutil.wait_procs(left, timeout=grace_seconds if received else 5.0)
        for p in alive:
            with _gone():
                p.kill()
        psutil.wait_procs(alive, timeout=10.0)
    if received:
        raise Interrupted(received[0], f"stopped the launcher and {len(left)} worker process(es); the last complete "
                                       "checkpoint is kept: continue with --resume")
    return rc


class _gone:
    """``with _gone(): p.kill()``: a process that already exited is not an error."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        import psutil

        return exc_type is not None and issubclass(exc_type, (psutil.NoSuchProcess, ProcessLookupError))


def _descendants_and_group(pid: int) -> list:
    """Live processes started by ``pid`` (recursively) or left in its process group."""
    import psutil

    found = {}
    with _gone():
        for p in psutil.Process(pid).children(recursive=True):
            found[p.pid] = p
    for p in psutil.process_iter(["pid"]):
        with _gone():
            if p.pid != os.getpid() and os.getpgid(p.pid) == pid:
                found.setdefault(p.pid, p)
    alive = []
    for p in found.values():
        with _gone():
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


def _signal_tree(pid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pid`` and to every descendant of ``pid``."""
    targets = _descendants_and_group(pid)
    with _gone():
        os.killpg(pid, signum)
    for p in targets:
        with _gone():
            p.send_signal(signum)
