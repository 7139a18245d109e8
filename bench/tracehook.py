"""A profile hook for `python -m bench.trackpath`, installed in the worker process it
starts: every call into a runtime module (`streams.runtime.*`) on the event loop's
thread, kept with its wall-clock time, the module it came from, whether it is a fresh
call or a coroutine resumed, and the outermost frame of its stack (what started it: an
agent, a timer, a callback). Written as JSON to the file named by `TRACE_FILE` each
time `<TRACE_FILE>.dump` appears (the harness asks; this writes and removes it)."""

from __future__ import annotations

import asyncio
import dis
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

RUNTIME = "streams.runtime."
_FLAGS = 0x20 | 0x80 | 0x200  # generator, coroutine, async generator


def _first_resume(code: CodeType, cache: dict[CodeType, int]) -> int:
    offset = cache.get(code)
    if offset is None:
        offset = next((i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), 0)
        cache[code] = offset
    return offset


def _module(frame: FrameType | None) -> str | None:
    return frame.f_globals.get("__name__") if frame is not None else None


def _root(frame: FrameType, loop_codes: set[CodeType]) -> str:
    """What started the work `frame` is part of: the running task's coroutine, or the
    callback the loop called (the outermost frame above one that runs the loop: the
    codes that were beneath a task's coroutine, `loop_codes`)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no loop running (start-up)
        task = None
    if task is not None:
        coro: Any = task.get_coro()
        top = getattr(coro, "cr_frame", None)
        if top is not None and top.f_back is not None:
            loop_codes.add(top.f_back.f_code)
        return f"task {_module(top) if top is not None else '?'}:{getattr(coro, '__qualname__', '?')}"
    while frame.f_back is not None and frame.f_back.f_code not in loop_codes:
        frame = frame.f_back
    return f"callback {_module(frame)}:{frame.f_code.co_qualname}"


def profiler(records: list[tuple[Any, ...]], prefix: str = RUNTIME) -> Callable[[FrameType, str, Any], None]:
    """A `sys.setprofile` function keeping, for each call into a module whose name
    starts with `prefix`: (time, module, function, caller's module or "the loop",
    fresh or resumed, root)."""
    starts: dict[CodeType, int] = {}
    loop_codes: set[CodeType] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(prefix):
            return
        code = frame.f_code
        fresh = not (code.co_flags & _FLAGS) or frame.f_lasti <= _first_resume(code, starts)
        root = _root(frame, loop_codes)
        back = frame.f_back
        caller = "the loop" if back is None or back.f_code in loop_codes else _module(back)
        records.append((time.time(), module, code.co_qualname, caller, fresh, root))

    return profile


def install(path: str) -> None:
    records: list[tuple[Any, ...]] = []

    def writer() -> None:
        request = Path(path + ".dump")
        while True:
            if request.exists():
                Path(path).write_text(json.dumps(list(records)))
                request.unlink()
            time.sleep(0.1)

    threading.Thread(target=writer, name="trackpath-writer", daemon=True).start()
    sys.setprofile(profiler(records))


if __name__ == "__main__":  # python -m bench.tracehook: the worker, traced
    import runpy

    install(os.environ["TRACE_FILE"])
    sys.argv = ["cs-relay", "worker"]
    runpy.run_module("streams.cli", run_name="__main__")
