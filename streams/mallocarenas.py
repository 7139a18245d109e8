"""glibc's malloc arenas for the worker process: at most ARENAS of them.

glibc gives a thread that finds the arenas busy an arena of its own, up to 8 per core,
each a heap of up to 64 MiB that keeps what was freed in it for reuse rather than
returning it. A worker has about nine threads (Faust's consumer thread, RocksDB's flush
and compaction threads, the event loop's): in scenario f (`make bench`) the arenas of
the threads other than the main one held 46 MB at about 140,000 users. Two arenas
kept 10 MB less RSS at 20,000 users (140-142 MB against 150-152 MB in four runs
without, docs/benchmarks.md) at no measurable CPU per track.

`cap(ARENAS)` is called by `cs-relay worker` first thing, before Faust or RocksDB
start a thread (an arena is made when a thread first allocates). glibc's own
`MALLOC_ARENA_MAX`, when the environment sets it, wins: glibc applied it already and
`cap` leaves it alone. Elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

ARENAS = 2
M_ARENA_MAX = -8  # glibc's malloc.h
ENV = "MALLOC_ARENA_MAX"


def cap(arenas: int = ARENAS, environ: Mapping[str, str] = os.environ) -> bool:
    """Limit this process to `arenas` malloc arenas; True if glibc took it, False when
    the environment sets MALLOC_ARENA_MAX or the C library is not glibc."""
    if arenas < 1:
        raise ValueError("arenas must be at least 1")
    if environ.get(ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or getattr(libc, "gnu_get_libc_version", None) is None:
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
