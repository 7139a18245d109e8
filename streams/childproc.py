"""Child processes that never outlive their parent.

`cs-relay dev` starts Kafka's JVM, the mocks and the workers. Stopped with Ctrl-C or
SIGTERM it stops them in order; killed outright (SIGKILL, the OOM killer) it can do
nothing, and its children used to keep running, holding their ports. On Linux the
`preexec_fn` that `dies_with_parent()` returns asks the kernel to send the child
SIGKILL when its parent goes (`prctl(PR_SET_PDEATHSIG)`); the setting survives the
`exec` of the child's program (the Kafka JVM's too). Elsewhere it does nothing.

    subprocess.Popen(cmd, preexec_fn=childproc.dies_with_parent())

`Children` and `stop` are how `cs-relay dev` stops them when told: SIGTERM to a group of
children at a time, SIGKILL to any that outlast its timeout.

The kernel's "parent" is the *thread* that started the child: start children from a
thread that lives as long as they should (`cs-relay dev` uses its main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CANNOT_BIND = 127  # the child's exit status when the kernel refuses: no immortal child


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def dies_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` binding the child to this process (None where the kernel cannot).
    Looked up here, in the parent: between fork and exec the child only calls prctl."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def bind() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(CANNOT_BIND)
        if os.getppid() != parent:  # the parent died between the fork and the prctl
            os._exit(CANNOT_BIND)

    return bind


def stop(procs: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM to all of them at once, then SIGKILL to any still running after `timeout`."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def descendants(pid: int | None = None) -> list[int]:
    """The processes under `pid` (this process by default), at any depth: what a process
    that must stop at once kills, its children's own children (Kafka's JVM under a
    launcher, a pool's workers) included. Read from Linux's /proc; none elsewhere."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if sys.platform.startswith("linux") else ():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    frontier = [os.getpid() if pid is None else pid]
    while frontier:
        for child in parents.get(frontier.pop(), ()):
            if child not in found:
                found.append(child)
                frontier.append(child)
    return found


def kill(pids: list[int]) -> None:
    """SIGKILL each of them that still runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Children:
    """The children a process has started, for stopping them: while it lives, the first
    SIGINT, SIGTERM or SIGHUP raises KeyboardInterrupt, interrupting whatever the process
    is doing (a wait included), so that its `finally` stops the children in order after
    setting `stopping`; a signal during that stop SIGKILLs them all at once. `restore()`
    puts the previous handlers back."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.pids: list[int] = []  # children started by others' code (Kafka's JVM by LocalKafka)
        self.stopping = False
        # SIGHUP ignored when we started stays ignored (`nohup`); SIGINT and SIGTERM are
        # handled whatever they were: a shell without job control starts `cmd &` with
        # SIGINT ignored, and a Ctrl-C that reaches it (the script's process group) must
        # still stop it and its children.
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        self._previous = {s: h for s, h in previous.items() if not (s == signal.SIGHUP and h == signal.SIG_IGN)}
        for signum in self._previous:
            signal.signal(signum, self._on_signal)

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.procs.append(proc)
        return proc

    def _on_signal(self, signum: int, frame: object) -> None:  # noqa: ARG002
        if not self.stopping:
            raise KeyboardInterrupt
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
