"""How `python -m bench` stops when told (SIGINT, SIGTERM, SIGHUP), whatever it waits
for, and takes its children (workers, py-spy, the HTTP ceiling's process, a local
broker) along.

asyncio turns SIGINT into a stop only where Python's own handler is installed: a bench
started in the background by a script inherits SIGINT ignored (a shell without job
control does that to `cmd &`) and ignored every Ctrl-C or `kill -INT`, its workers
waiting, until SIGTERM's default action killed it (session 8, scenario e). `Interrupt`
handles the three signals itself (SIGHUP stays ignored under `nohup`):

1. the first cancels the run (`Interrupt.run`): the scenarios' `finally` stop their
   workers (SIGTERM) and the mocks; after `grace` seconds every process still under
   the bench is SIGKILLed, and after twice that the bench exits (130) whatever holds it;
2. a second one kills them all and exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from streams import childproc

T = TypeVar("T")
GRACE = 5.0  # seconds the workers get to stop on SIGTERM once the bench is told to stop
INTERRUPTED = 130  # the exit status of a program stopped by a signal (128 + SIGINT)


class Interrupt:
    """Installed for the bench's whole run (`restore()` at the end)."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self.signals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._previous: dict[int, Any] = {}
        for signum in childproc.STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if signum == signal.SIGHUP and handler == signal.SIG_IGN:
                continue  # nohup's
            self._previous[signum] = handler
            signal.signal(signum, self._on_signal)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """`asyncio.run(main)`, cancelled by the first signal (KeyboardInterrupt then)."""

        async def cancellable() -> T:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            # A signal whose C handler ran outside the loop's wait (just before it went
            # back to sleep, or in another thread) is handled only once the main thread
            # runs Python again: the wakeup fd wakes an idle loop for it.
            wake, woken = socket.socketpair()
            wake.setblocking(False)
            woken.setblocking(False)
            self._loop.add_reader(woken.fileno(), _drain, woken)
            previous_fd = signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)
            try:
                return await main
            finally:
                self._task = None
                signal.set_wakeup_fd(previous_fd)
                self._loop.remove_reader(woken.fileno())
                wake.close()
                woken.close()

        try:
            return asyncio.run(cancellable())
        except asyncio.CancelledError:
            if self.signals:
                raise KeyboardInterrupt from None
            raise

    def _on_signal(self, signum: int, frame: object) -> None:  # noqa: ARG002
        self.signals += 1
        if self.signals > 1:
            self._exit_now()
        # os.write, not print: the signal may come in the middle of a print to stderr.
        os.write(2, f"{signal.Signals(signum).name}: stopping (once more to kill everything at once)\n".encode())
        self._after(self.grace, lambda: childproc.kill(childproc.descendants()))
        self._after(2 * self.grace, self._exit_now)
        task, loop = self._task, self._loop
        if task is None or loop is None:
            raise KeyboardInterrupt  # outside the event loop: starting the broker, writing the results
        loop.call_soon_threadsafe(task.cancel)

    def _after(self, seconds: float, action: Any) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()

    def _exit_now(self) -> None:
        childproc.kill(childproc.descendants())
        sys.stderr.flush()
        os._exit(INTERRUPTED)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.recv(4096)
