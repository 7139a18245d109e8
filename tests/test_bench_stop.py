"""`python -m bench` stops when told, whatever it is waiting for, and leaves no child.

Session 8 saw a bench stalled in scenario e (its two workers idle, waiting for
deliveries that never came) ignore two SIGINTs. Its workers' logs show no stop, so the
run was never cancelled: the bench had most likely been started in the background by a
script, so it inherited SIGINT ignored (what a shell does to `cmd &` without job
control), and asyncio only turns SIGINT into a stop when Python's own handler is there.
Only SIGTERM stopped it. The test starts the bench so, lets it wait on its worker, then
interrupts it: it must exit within seconds, its workers with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams import childproc
from tests.test_dev_stop import _alive, _wait_for

REPO = Path(__file__).resolve().parent.parent
EXIT_WITHIN = 15.0  # seconds from the signal to the bench's exit (its workers get a few to stop)


def _descendants(pid: int) -> dict[int, str]:
    """Every process under `pid`, with its command line."""
    found = {}
    for child in childproc.descendants(pid):
        try:
            found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            found[child] = "?"  # gone meanwhile
    return found


def _ignore_sigint() -> None:
    """What a shell without job control does to a command it starts with `&`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.e2e
def test_the_bench_waiting_on_its_worker_stops_on_sigint_and_leaves_no_child(kafka_bootstrap, tmp_path):
    """Started as a script starts it in the background, SIGINT ignored (a foreground bench
    takes the same path now: `bench.interrupt` handles SIGINT either way)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    log = tmp_path / "bench.log"
    command = [sys.executable, "-m", "bench", "--scenarios", "e", "--scale", "0.01", "--timeout", "120"]
    command += ["--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    with log.open("wb") as out:
        bench = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_ignore_sigint,
        )
    children: dict[int, str] = {}
    try:
        # Waiting: its worker is running and the bench polls for what the worker does.
        def waiting_on_a_worker() -> bool:
            if bench.poll() is not None:
                raise AssertionError(f"the bench exited early: {log.read_text(errors='replace')}")
            children.update(_descendants(bench.pid))
            return any("streams.cli worker" in cmd for cmd in children.values())

        _wait_for(waiting_on_a_worker, 90, "the bench to start a worker")
        # ... and has begun to log (Faust is booting it; the bench polls its log meanwhile).
        _wait_for(lambda: any(p.stat().st_size for p in (tmp_path / "work").glob("*/*/*.log")), 30, "a worker log")
        children.update(_descendants(bench.pid))
        bench.send_signal(signal.SIGINT)
        try:
            bench.wait(EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the bench did not exit within {EXIT_WITHIN:.0f} s of SIGINT; its output:\n"
                + log.read_text(errors="replace")
            ) from None
        assert bench.returncode == 130, log.read_text(errors="replace")
        _wait_for(lambda: not any(_alive(pid) for pid in children), 5, "the bench's children to be gone")
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


STUBBORN = """
import asyncio, subprocess, sys
from bench.interrupt import Interrupt
from streams import childproc

async def stubborn():
    child = subprocess.Popen(["sleep", "300"], preexec_fn=childproc.dies_with_parent())
    print(child.pid, flush=True)
    while True:  # a wait that swallows its cancellation (a stuck stop, a client that retries)
        try:
            await asyncio.Event().wait()  # never set: only a cancellation ends it
        except asyncio.CancelledError:
            pass

interrupt = Interrupt(grace=float(sys.argv[1]))
try:
    interrupt.run(stubborn())
finally:
    interrupt.restore()
"""


ASLEEP = """
import asyncio, signal, sys, threading, time
from bench.interrupt import Interrupt

def signal_once_the_loop_sleeps():
    # The signal lands outside the loop's wait: its C handler runs in this thread, as
    # when it comes just before the loop goes back to sleep. Nothing else would wake it.
    stat = f"/proc/self/task/{threading.main_thread().native_id}/stat"
    deadline = time.monotonic() + 10
    while open(stat).read().rsplit(")", 1)[1].split()[0] != "S" and time.monotonic() < deadline:
        time.sleep(0.001)  # until the main thread sleeps in the loop's wait
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

async def asleep():
    threading.Thread(target=signal_once_the_loop_sleeps).start()
    await asyncio.Event().wait()

interrupt = Interrupt(grace=1.0)
try:
    interrupt.run(asleep())
except KeyboardInterrupt:
    sys.exit(130)
finally:
    interrupt.restore()
"""


def test_a_signal_that_comes_while_the_loop_is_not_waiting_still_stops_the_bench():
    """An idle event loop (no timer, nothing to read) must still wake for a signal whose
    handler ran outside its wait: CI saw a bench stuck for ever after its SIGINT."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [sys.executable, "-c", ASLEEP],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.wait(15) == 130
        assert "SIGINT: stopping" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("signals", [1, 2])
def test_a_bench_stuck_in_its_stop_still_exits_and_kills_its_children(signals):
    """Whatever holds the run once cancelled, the first signal's watchdog kills what runs
    under it after `grace` seconds and exits after twice that; a second signal at once."""
    grace = 1.0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN, str(grace)],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint,
    )
    child = int(proc.stdout.readline())  # type: ignore[union-attr]
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert "SIGINT: stopping" in proc.stderr.readline()  # type: ignore[union-attr]  # handled
        if signals == 2:
            proc.send_signal(signal.SIGINT)
        proc.wait(4 * grace + 5)
        took = time.monotonic() - started
        assert proc.returncode == 130
        _wait_for(lambda: not _alive(child), 5, "its child to be killed")
        if signals == 1:
            assert took >= 2 * grace  # its stop had the grace it was given
        else:
            assert took < 2 * grace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if _alive(child):
            os.kill(child, signal.SIGKILL)
