"""Progress of a long operator command (`cs-relay send`, `cs-relay dlq replay`).

On a terminal: one line redrawn in place, a bar when the total is known, the count, the
rate and the time left. Elsewhere (a log file, a CI job): a plain line every few seconds,
so the output stays readable and small. Progress goes to standard error; the command's
own result stays on standard output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24
TTY_INTERVAL = 0.2  # seconds between redraws on a terminal
PLAIN_INTERVAL = 5.0  # seconds between lines elsewhere


class Progress:
    """Counts done (`update`) against an optional total (`total`: units of `done_units`,
    e.g. the bytes of the file being read), rendered at most every `interval` seconds."""

    def __init__(
        self,
        verb: str,
        *,
        total: int | None = None,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float | None = None,
    ) -> None:
        self.verb = verb
        self.total = total if total else None
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (TTY_INTERVAL if self.tty else PLAIN_INTERVAL)
        self._clock = clock
        self._start = clock()
        self._last_shown = self._start
        self._count = 0
        self._units = 0

    def update(self, count: int, done_units: int | None = None) -> None:
        self._count = count
        if done_units is not None:
            self._units = done_units
        now = self._clock()
        if now - self._last_shown >= self.interval:
            self._last_shown = now
            self._show(now)

    def finish(self) -> None:
        """Show the final figures (a terminal's line is ended)."""
        if self.total is not None:
            self._units = self.total
        self._show(self._clock())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self._count / elapsed
        parts = [f"{self.verb} {self._count:,}"]
        if self.total is not None:
            fraction = min(self._units / self.total, 1.0)
            if self.tty:
                filled = int(fraction * BAR_WIDTH)
                parts.append("[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]")
            parts.append(f"{fraction:4.0%}" if self.tty else f"{fraction:.0%}")  # a steady width on a terminal
        parts.append(f"{rate:,.0f}/s")
        if self.total is not None and 0 < self._units < self.total:
            left = elapsed * (self.total - self._units) / self._units
            parts.append(f"{_duration(left)} left")
        parts.append(f"{_duration(elapsed)} elapsed")
        return "  ".join(parts) if self.tty else ", ".join(parts)

    def _show(self, now: float) -> None:
        text = self.line(now)
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
