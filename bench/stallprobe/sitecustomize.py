"""Why a bench's worker is slow to handle an event, caught as it happens (docs/benchmarks.md,
"scenario a's stalls were Kafka fetches held 1.5 s"): put this folder on the worker's
PYTHONPATH and name a folder for the logs,

    STALLPROBE_DIR=/tmp/stalls PYTHONPATH=bench/stallprobe python -m bench --scenarios a

and each `cs-relay worker` (any process whose command line names a worker) writes
`stalls-<pid>.log`, with lines of three kinds:

* `STALL`: the event loop was late. A watchdog thread hands the loop a callback
  (`call_soon_threadsafe`) every 50 ms; when it has not run within `STALLPROBE_MS` (200
  unless given), the thread samples every 10 ms until it runs: the Python stack of the
  loop's thread, and that thread's kernel state and system call from /proc (R running,
  S sleeping, D waiting on the disk; futex: waiting for the GIL or a lock; epoll_pwait:
  idle). `gil_gap_ms`, the longest gap between two samples, is how long the watchdog
  itself could not run: some thread held the GIL. Every 10 s a `SUMMARY` line counts
  the callbacks by how late they ran.
* `FETCH`: a fetch request of one of the worker's Kafka consumers that took over 200 ms,
  with the partitions it asked for per topic and how many partitions had fetched
  records not consumed yet (aiokafka leaves those out of the request).
* `IDLE` (with `STALLPROBE_IDLE_MS`, say 300): the loop's thread slept in epoll for that
  long after having run in the 2 s before; the loop's tasks, counted by where they wait.

Only a diagnostic: nothing of it runs unless STALLPROBE_DIR is set.
"""

import collections
import os
import sys
import threading
import time

_dir = os.environ.get("STALLPROBE_DIR")
PERIOD = 0.05
THRESHOLD = int(os.environ.get("STALLPROBE_MS", "200")) / 1000
IDLE = float(os.environ.get("STALLPROBE_IDLE_MS", "0")) / 1000  # 0: no IDLE lines
FETCH_MS = 200
BUCKETS = (10, 50, 100, 200, 500, 1000)
SYSCALLS = {
    "0": "read",
    "1": "write",
    "3": "close",
    "7": "poll",
    "9": "mmap",
    "11": "munmap",
    "17": "pread64",
    "18": "pwrite64",
    "20": "writev",
    "26": "msync",
    "35": "nanosleep",
    "44": "sendto",
    "45": "recvfrom",
    "74": "fsync",
    "75": "fdatasync",
    "82": "rename",
    "87": "unlink",
    "202": "futex",
    "230": "clock_nanosleep",
    "232": "epoll_wait",
    "257": "openat",
    "277": "sync_file_range",
    "281": "epoll_pwait",
    "285": "fallocate",
}
STDLIB = ("tasks.py", "locks.py", "queues.py", "futures.py", "timeouts.py")

_running = [None]  # the loop running on the main thread now, if any


def _track_running_loop():
    """Wrap asyncio's `_set_running_loop` (uvloop binds it when imported, so this runs
    first) to know which loop, if any, runs on the main thread."""
    import asyncio
    import asyncio.events

    original = asyncio.events._set_running_loop

    def _set_running_loop(loop):
        original(loop)
        if threading.current_thread() is threading.main_thread():
            _running[0] = loop

    asyncio.events._set_running_loop = asyncio._set_running_loop = _set_running_loop


def _stack(frame, depth=14):
    parts = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        parts.append(f"{os.path.basename(code.co_filename)}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(parts)


def _kernel(tid):
    """The thread's state and system call, as /proc tells them: "S/epoll_pwait"."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "?"
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            call = f.read().split()[0]
        call = call if call == "running" else SYSCALLS.get(call, "sys" + call)
    except (OSError, IndexError):
        call = "?"
    return f"{state}/{call}"


def _watch(log):
    """The lateness watchdog: STALL and SUMMARY lines."""
    main = threading.main_thread()
    watched = None
    lateness = collections.Counter()
    summary_at = time.monotonic() + 10
    while True:
        loop = _running[0]
        if loop is None:
            time.sleep(PERIOD)
            continue
        if loop is not watched:
            watched = loop
            kind = f"{type(loop).__module__}.{type(loop).__name__}"
            log.write(f"{time.time():.3f} watching {kind} tid={main.native_id}\n")
        beat = threading.Event()
        sent = time.monotonic()
        try:
            loop.call_soon_threadsafe(beat.set)
        except RuntimeError:  # closed meanwhile
            continue
        if not beat.wait(THRESHOLD):
            samples = collections.Counter()
            gil_gap = 0.0
            last = time.monotonic()
            while not beat.wait(0.01):
                now = time.monotonic()
                gil_gap = max(gil_gap, now - last)
                last = now
                frame = sys._current_frames().get(main.ident)
                samples[f"[{_kernel(main.native_id)}] {_stack(frame)}"] += 1
                if now - sent > 30 or _running[0] is not loop:
                    break
            late_ms, gap_ms = (time.monotonic() - sent) * 1000, gil_gap * 1000
            top = " | ".join(f"{n}x {s}" for s, n in samples.most_common(4))
            counted = sum(samples.values())
            log.write(
                f"{time.time():.3f} STALL late_ms={late_ms:.0f} gil_gap_ms={gap_ms:.0f} samples={counted} :: {top}\n"
            )
        if _running[0] is not loop or not beat.wait(30):
            continue  # the loop stopped with the callback queued
        late_ms = (time.monotonic() - sent) * 1000
        lateness[max([0, *(b for b in BUCKETS if late_ms >= b)])] += 1
        if time.monotonic() > summary_at:
            counts = " ".join(f">={b}ms:{lateness[b]}" for b in (0, *BUCKETS))
            log.write(f"{time.time():.3f} SUMMARY {counts}\n")
            lateness.clear()
            summary_at = time.monotonic() + 10
        time.sleep(PERIOD)


def _awaiting(coro):
    """Where a task's coroutine chain waits: its frames outside asyncio's own modules
    (the last eight), then the innermost."""
    where = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            where.append(type(coro).__name__)
            break
        where.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    outer = [w for w in where[:-1] if w.split(":", 1)[0] not in STDLIB]
    return " > ".join(outer[-8:] + where[-1:])


def _dump_tasks(loop, log):
    """On the loop's thread: every task of the loop, counted by where it waits."""
    import asyncio

    counts = collections.Counter(_awaiting(task.get_coro()) for task in asyncio.all_tasks(loop))
    top = " | ".join(f"{n}x {w}" for w, n in counts.most_common(40))
    log.write(f"{time.time():.3f} IDLE idle_ms={IDLE * 1000:.0f} tasks={sum(counts.values())} :: {top}\n")


def _idle_watch(log):
    """IDLE lines: once the loop's thread has slept in epoll for IDLE seconds (nine
    samples in ten: the watchdog's callbacks wake it briefly) after having run in the
    2 s before, what its tasks wait for."""
    main = threading.main_thread()
    samples = collections.deque()
    dumped_at = 0.0
    while True:
        time.sleep(0.01)
        now = time.monotonic()
        samples.append((now, _kernel(main.native_id).startswith("S/epoll")))
        while samples[0][0] < now - IDLE - 2:
            samples.popleft()
        recent = [idle for t, idle in samples if t >= now - IDLE]
        before = [idle for t, idle in samples if t < now - IDLE]
        loop = _running[0]
        if (
            loop is not None
            and samples[0][0] < now - IDLE - 1.5
            and sum(recent) >= 0.9 * len(recent)
            and before.count(False) >= 10
            and now - dumped_at > IDLE
        ):
            try:
                loop.call_soon_threadsafe(_dump_tasks, loop, log)
            except RuntimeError:
                pass
            dumped_at = now


def _log_long_fetches(log):
    """FETCH lines: wrap aiokafka's `Fetcher._proc_fetch_request`."""
    from aiokafka.consumer import fetcher

    original = fetcher.Fetcher._proc_fetch_request

    async def _proc_fetch_request(self, assignment, node_id, request):
        started = time.monotonic()
        try:
            return await original(self, assignment, node_id, request)
        finally:
            took_ms = (time.monotonic() - started) * 1000
            if took_ms > FETCH_MS:
                asked = {topic: len(partitions) for topic, partitions in request.topics}
                log.write(
                    f"{time.time():.3f} FETCH took_ms={took_ms:.0f} max_wait_ms={request._max_wait_ms}"
                    f" unconsumed_partitions={len(self._records)} asked={asked}\n"
                )

    fetcher.Fetcher._proc_fetch_request = _proc_fetch_request


if _dir and "worker" in " ".join(sys.argv):
    _log = open(os.path.join(_dir, f"stalls-{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115
    _track_running_loop()
    _log_long_fetches(_log)
    threading.Thread(target=_watch, args=(_log,), daemon=True, name="stallprobe").start()
    if IDLE:
        threading.Thread(target=_idle_watch, args=(_log,), daemon=True, name="stallprobe-idle").start()
