"""The worker's cap on glibc's malloc arenas (streams/mallocarenas.py): in a fresh
process, eight threads allocating at once get arenas of their own without it, and
share the capped number with it. Arenas other than the main one are heaps aligned to
64 MiB in /proc/self/maps."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from streams import mallocarenas

PROBE = textwrap.dedent(
    """
    import json, sys, threading
    from streams import mallocarenas
    took = mallocarenas.cap(2) if sys.argv[1] == "capped" else None
    start, done, keep = threading.Barrier(8), threading.Barrier(8), []
    def work():
        start.wait()
        keep.append([bytearray(200) for _ in range(2000)])  # malloc'd by this thread
        done.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    heaps = 0
    for line in open("/proc/self/maps"):
        fields = line.split()
        begin = int(fields[0].split("-")[0], 16)
        if len(fields) == 5 and fields[1] == "rw-p" and begin % (64 << 20) == 0:
            heaps += 1
    print(json.dumps({"took": took, "heaps": heaps}))
    """
)


def arenas(mode: str) -> dict:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_ARENA_MAX from the caller
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_capped_threads_share_two_arenas_where_they_took_one_each():
    capped, free = arenas("capped"), arenas("free")  # glibc (Linux, the Docker image's Debian)
    assert capped["took"] is True and capped["heaps"] <= 1  # the main arena and one more
    assert free["heaps"] >= 3


def test_malloc_arena_max_in_the_environment_wins_and_a_cap_is_at_least_one():
    assert mallocarenas.cap(2, environ={"MALLOC_ARENA_MAX": "4"}) is False
    with pytest.raises(ValueError):
        mallocarenas.cap(0, environ={})
