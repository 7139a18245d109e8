"""What a broker that exited while starting says: the line of its logs that tells why,
a hint what to do, and the last lines of its own log."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path


def exit_message(code: int, out: tuple[Path, int], server_log: tuple[Path, int], hints: Mapping[str, str]) -> str:
    """`out` and `server_log`: each file and the offset this start began writing it at.
    `hints` by a text the key line may hold; "" for the hint when none matches."""
    out_lines = tail(*out, 12)
    log = tail(*server_log, 200)
    problems = [line for line in log + out_lines if re.search(r"\b(ERROR|FATAL)\b|Exception|Error:", line)]
    key = problems[-1] if problems else (out_lines[-1] if out_lines else "no output")
    hint = next((h for text, h in hints.items() if text and text in key), hints.get("", ""))
    shown = [line for line in log[-12:] if line.strip()] or out_lines
    return f"Kafka exited with code {code} while starting: {key[:400]}; {hint}\n" + "\n".join(
        "    " + line[:300] for line in shown[-12:]
    )


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tail(path: Path, offset: int, lines: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(offset if offset <= size else 0, size - 256 * 1024)
            handle.seek(start)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
