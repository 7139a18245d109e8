"""The benchmark's pure parts (bench/mix.py, bench/stats.py): the traffic mix and the
arithmetic of its report. Fast, no broker."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from bench import mix, stats
from streams.core.segment import parse


def test_split_counts_follows_the_shares_and_adds_up():
    assert mix.split_counts(50_000, mix.DEFAULT_SHARES) == {
        "identify": 2_500,
        "group": 1_000,
        "track": 35_000,
        "page": 11_500,
    }
    counts = mix.split_counts(7, {"a": 1, "b": 1, "c": 1})
    assert sum(counts.values()) == 7 and sorted(counts.values()) == [2, 2, 3]
    with pytest.raises(ValueError):
        mix.split_counts(10, {"a": 0})


def test_plan_opens_with_one_introduction_per_group_by_its_first_member():
    calls = mix.plan(3_000, users=400, groups=40, seed=7)
    assert len(calls) == 3_000
    intro = calls[:40]
    assert all(c.type == "group" and c.user == c.group for c in intro)
    assert sorted(c.group for c in intro) == list(range(40))
    assert Counter(c.type for c in calls) == mix.split_counts(3_000, mix.DEFAULT_SHARES)
    assert all(c.group == c.user % 40 for c in calls)


def test_early_calls_come_before_the_users_own_first_group_call():
    calls = mix.plan(20_000, users=1_000, groups=50, early_share=1.0, seed=3)
    early = [i for i, c in enumerate(calls) if c.early]
    assert early, "the mix must hold calls that wait"
    for index in early:
        user = calls[index].user
        group_calls = [i for i, c in enumerate(calls) if c.user == user and c.type == "group"]
        assert group_calls and group_calls[0] > index  # released by the user's own group call
        assert calls[index].type != "group"


def test_plan_is_reproducible_and_refuses_too_few_group_calls():
    assert mix.plan(3_000, users=400, groups=40, seed=5) == mix.plan(3_000, users=400, groups=40, seed=5)
    with pytest.raises(ValueError, match="fewer than the 500 groups"):
        mix.plan(3_000, users=10_000, groups=500)
    continued = mix.plan(1_000, users=400, groups=40, early_share=0.0, introductions=False)
    assert len(continued) == 1_000 and not any(c.early for c in continued)


@pytest.mark.parametrize("kind", ["identify", "group", "track", "page"])
def test_messages_are_valid_segment_calls_stamped_with_their_produce_time(kind):
    produced = 1_790_000_000_123_456
    call = mix.Call(kind, user=42, group=2, variant=5)
    body = mix.message(call, seq=9, run="r1", produced_us=produced, padding=100)
    msg = parse(json.dumps(body).encode())
    assert msg.type == kind and msg.key == "user-000042"
    assert mix.us_from_iso(msg.timestamp) == produced
    assert msg.message_id == f"r1-9-{produced}"
    assert len(json.dumps(body)) > 100
    if kind == "group":
        assert msg.group_id == "group-00002" and body["traits"]["name"]
    else:
        assert body["context"]["groupId"] == "group-00002"


def test_an_early_message_names_no_group():
    body = mix.message(mix.Call("track", 1, 1, 0, early=True), seq=0, run="r", produced_us=1)
    assert "groupId" not in body["context"]


def test_timestamps_round_trip_to_the_microsecond():
    assert mix.iso_from_us(0) == "1970-01-01T00:00:00.000000Z"
    assert mix.us_from_iso("2026-11-23T16:42:29.703739Z") == mix.us_from_iso("2026-11-23T17:42:29.703739+01:00")
    assert mix.us_from_iso(mix.iso_from_us(1_790_000_000_000_001)) == 1_790_000_000_000_001


def test_percentiles_interpolate_like_numpy():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert stats.percentile(values, 50) == 5.5
    assert stats.percentile(values, 0) == 1 and stats.percentile(values, 100) == 10
    assert stats.percentile([3.0], 99) == 3.0
    assert math.isnan(stats.percentile([], 50))
    assert stats.summary(values) == {"count": 10, "p50": 5.5, "p90": 9.1, "p99": 9.9, "max": 10}


def test_receipts_and_completions():
    record = {
        "json": {"timestamp": mix.iso_from_us(1_000_000)},
        "received_at": mix.iso_from_us(1_250_000),
        "status": 200,
    }
    r = stats.receipt("clientsuccess", record)
    assert r == stats.Receipt("clientsuccess", 1_000_000, 1_250_000, 200) and r.latency_ms == 250.0
    assert stats.receipt("clientsuccess", {"json": {}, "received_at": "x", "status": 200}) is None
    receipts = [
        stats.Receipt("clientsuccess", 1, 10, 200),
        stats.Receipt("customersuccessbox", 1, 30, 200),
        stats.Receipt("customersuccessbox", 2, 50, 503),  # a failed try does not deliver
        stats.Receipt("customersuccessbox", 2, 40, 200),
    ]
    assert stats.completions(receipts) == {1: 30, 2: 40}


def test_rates_and_series():
    assert stats.rate(500, 0, 2 * stats.US) == 250
    assert stats.rate(5, 10, 10) == 0.0
    times = [0, 10, 999_999, 1_000_000, 3_500_000, -5]
    assert stats.per_second(times, 0) == [3, 1, 0, 1]
    assert stats.per_second(times, 0, seconds=2) == [3, 1]
    assert stats.per_interval(times, 0, 250_000) == [2, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert stats.per_interval(times, 10, 500_000, count=3) == [1, 2, 0]
    assert stats.ratio(50, 200) == 0.25 and math.isnan(stats.ratio(1, 0))
    assert stats.per_100k_users(3 * 2**20, 10_000) == 30 * 2**20
    assert stats.cdf_points([1.0, 2.0, 3.0], points=3) == [(0.0, 1.0), (50.0, 2.0), (100.0, 3.0)]


def test_proc_status_and_data_dir_files():
    status = "Name:\tpython\nVmHWM:\t  153600 kB\nVmRSS:\t  102400 kB\nThreads:\t7\n"
    assert stats.proc_status_kb(status) == {"VmHWM": 153600, "VmRSS": 102400}
    assert stats.table_of("v1/tables/users-7.db/000013.sst") == "users"
    assert stats.table_of("v1/tables/pending-12.db/LOG") == "pending"
    assert stats.table_of("loose-file") == "(files)"
    assert [stats.is_table_data(n) for n in ("000013.sst", "000020.log", "MANIFEST-000017", "CURRENT")] == [True] * 4
    assert [stats.is_table_data(n) for n in ("LOG", "LOG.old.1795454794786629", "OPTIONS-000019", "LOCK")] == [
        False
    ] * 4


def test_cpu_from_proc_stat_samples():
    stat = "4242 (python -m x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100"
    assert stats.proc_stat_cpu_seconds(stat, 100) == 3.0  # utime 250 + stime 50 ticks
    samples = [(0, 1.0), (1_000_000, 1.5), (2_000_000, 2.5), (3_000_000, 2.6)]
    assert stats.cpu_cores(samples, 0, 2_000_000) == 0.75
    assert math.isnan(stats.cpu_cores(samples, 5_000_000, 6_000_000))


def test_what_the_worker_shares_the_machine_with():
    stat = "cpu  100 20 30 400 50 5 5 0 0 0\ncpu0 50 10 15 200 25 2 3 0 0 0\n"
    assert stats.machine_busy_seconds(stat, 100) == 1.6  # all but idle 400 and iowait 50 ticks
    samples = [(0, 10.0, 1.0, 5.0), (1_000_000, 11.5, 1.3, 5.9), (2_000_000, 13.0, 1.6, 6.8), (9_000_000, 99.0, 9, 9)]
    assert stats.machine_cores(samples, 0, 2_000_000, cores=2) == {
        "cores": 2,
        "busy": 1.5,
        "workers": 0.9,
        "bench": 0.3,
        "rest": 0.3,
        "span_s": 2.0,
    }
    # interval by interval: [seconds in, busy, workers, bench]; the sample past the window left out
    assert stats.machine_timeline(samples, 0, 2_000_000) == [[1.0, 1.5, 0.9, 0.3], [2.0, 1.5, 0.9, 0.3]]
    assert stats.machine_timeline(samples[:1], 0, 2_000_000) == []


def test_the_speed_of_the_cores_is_the_median_probe_sample_against_the_fastest():
    samples = [(0, 2000), (1_000_000, 2500), (2_000_000, 4000), (3_000_000, 2000), (9_000_000, 1000)]
    # inside the window: 2000/2500, 2000/4000, 2000/2000 -> 0.8, 0.5, 1.0; the median 0.8
    assert stats.machine_speed(samples, 1_000_000, 3_000_000, fastest_us=2000) == 0.8
    assert stats.machine_speed(samples, 0, 3_000_000, fastest_us=2000) == 0.9  # 1.0, 0.8, 0.5, 1.0
    assert math.isnan(stats.machine_speed(samples, 4_000_000, 5_000_000, fastest_us=2000))
    assert stats.probe_figures(samples, 1_000_000, 3_000_000, fastest_us=2000) == {
        "median": 2500,
        "samples": 3,
        "fastest": 2000,
    }
    assert stats.probe_figures(samples, 4_000_000, 5_000_000, fastest_us=2000)["median"] is None
    assert stats.speed_figures(samples, 1_000_000, 3_000_000, 2000) == {
        "machine_speed": 0.8,
        "speed_probe_us": {"median": 2500, "samples": 3, "fastest": 2000},
    }


async def test_the_speed_probe_runs_apart_and_stops_with_its_sampler():
    """The real probe, `python -m bench.speedprobe`: its calibration, then samples; the
    sampler cancelled, its process is gone."""
    import asyncio

    from bench.harness import probe_speed

    samples: list[tuple[int, int]] = []
    sampler = asyncio.create_task(probe_speed(samples))
    async with asyncio.timeout(30):
        while len(samples) < 3:
            await asyncio.sleep(0.05)
    [probe] = _children_running("bench.speedprobe")
    sampler.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):
            await sampler
    assert all(cpu > 0 for _, cpu in samples)
    assert samples[-1][0] - samples[1][0] >= 0.2 * stats.US  # a pause between two samples
    from pathlib import Path

    assert not Path(f"/proc/{probe}").exists()  # killed and reaped, not a zombie


def _children_running(module: str) -> list[int]:
    """This process's children whose command line names `module`."""
    import os
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and module.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_cpu_by_kind_of_thread():
    assert stats.thread_kind(True, "python") == "main"
    assert stats.thread_kind(False, "rocksdb:low") == "rocksdb"
    assert stats.thread_kind(False, "python") == "other"
    samples = [
        (0, {"main": 1.0, "other": 0.2}),
        (1_000_000, {"main": 1.8, "other": 0.3, "rocksdb": 0.5}),  # a compaction thread started
        (2_000_000, {"main": 2.6, "other": 0.4, "rocksdb": 0.5}),
    ]
    assert stats.cores_by_kind(samples, 0, 2_000_000) == pytest.approx({"main": 0.8, "other": 0.1, "rocksdb": 0.25})


async def test_a_process_cpu_split_by_thread_keeps_the_cpu_of_threads_that_ended():
    """A real child: a thread that burns CPU and ends; its CPU stays in the split."""
    import asyncio
    import subprocess
    import sys
    from pathlib import Path

    from bench.harness import Worker

    script = (
        "import threading, time\n"
        "def burn():\n"
        "    end = time.process_time() + 0.3\n"
        "    while time.process_time() < end: pass\n"
        "t = threading.Thread(target=burn); t.start(); t.join()\n"
        "import sys\n"
        "print('ended', flush=True); sys.stdin.read()  # alive until its stdin closes (the test kills it)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ended\n"
        worker = Worker(process, Path("/dev/null"))
        samples: list[tuple[int, float]] = []
        threads: list[tuple[int, dict[str, float]]] = []
        sampler = asyncio.create_task(worker.sample_cpu(samples, every=0.01, threads=threads))
        async with asyncio.timeout(10):  # a few samples of a process that has ended its thread
            while len(threads) < 3:
                await asyncio.sleep(0.01)
        sampler.cancel()
        total, by_kind = samples[-1][1], threads[-1][1]
        assert set(by_kind) == {"main", "exited"}
        assert by_kind["exited"] >= 0.25 and sum(by_kind.values()) == pytest.approx(total, abs=0.02)
    finally:
        process.kill()
        process.wait(10)


def test_memory_by_users_gives_users_and_megabytes_evenly_spread_with_the_last_sample():
    samples = [(2 * u, 100 * 1024 + u, 80 * 1024) for u in range(0, 100_001, 100)]  # 1,001 samples
    curve = stats.memory_by_users(samples, per_event=2, points=11)
    assert curve[0] == [0, 100.0, 80.0] and curve[-1] == [100_000, round((100 * 1024 + 100_000) / 1024, 1), 80.0]
    assert len(curve) <= 12 and [p[0] for p in curve] == sorted(p[0] for p in curve)
    assert all(b[0] - a[0] >= 9_000 for a, b in zip(curve[:-2], curve[1:-1], strict=True))
    assert stats.memory_by_users(samples[:3], per_event=2) == [[0, 100.0, 80.0], [100, 100.1, 80.0], [200, 100.2, 80.0]]
    with pytest.raises(ValueError):
        stats.memory_by_users(samples, per_event=0)


def test_growth_per_100k_users_reads_the_second_half_of_the_curve():
    # caches filling in the first half (+50 MB), then 10 MB per 100,000 users
    curve = [[0, 100.0, 0.0], [250_000, 150.0, 0.0], [500_000, 150.0, 0.0], [1_000_000, 200.0, 0.0]]
    assert stats.growth_per_100k_users(curve) == pytest.approx(10.0)
    assert stats.growth_per_100k_users([[100, 150.0, 0.0], [200, 150.0, 0.0]]) == 0.0
    assert math.isnan(stats.growth_per_100k_users([])) and math.isnan(stats.growth_per_100k_users([[0, 1.0, 1.0]]))


def test_receipts_return_each_first_delivery_once_and_trimmed_ones_free_the_mocks():
    from types import SimpleNamespace

    from bench.harness import CLIENTSUCCESS, CSB, Receipts, TrimmedReceipts
    from streams.testing.recorder import RECORDS_KEY

    def record(stamp: str, status: int) -> dict:
        return {"json": {"timestamp": stamp}, "received_at": "2026-12-07T00:00:01Z", "status": status}

    for kind in (Receipts, TrimmedReceipts):
        lists: dict[str, list] = {CLIENTSUCCESS: [], CSB: []}
        receipts = kind(SimpleNamespace(apps={key: {RECORDS_KEY: lists[key]} for key in lists}))
        lists[CLIENTSUCCESS] += [record("2026-12-07T00:00:00.000001Z", 500), record("2026-12-07T00:00:00.000002Z", 200)]
        first = receipts.collect()
        assert first == [(CLIENTSUCCESS, stats.us_from_iso("2026-12-07T00:00:00.000002Z"))]
        # the failed one answered now, the delivered one redelivered: only the first is fresh
        lists[CLIENTSUCCESS] += [record("2026-12-07T00:00:00.000001Z", 200), record("2026-12-07T00:00:00.000002Z", 200)]
        lists[CSB].append(record("2026-12-07T00:00:00.000002Z", 200))
        second = receipts.collect()
        assert sorted(second) == sorted(
            [
                (CLIENTSUCCESS, stats.us_from_iso("2026-12-07T00:00:00.000001Z")),
                (CSB, stats.us_from_iso("2026-12-07T00:00:00.000002Z")),
            ]
        )
        assert receipts.collect() == [] and len(receipts.all) == 5 and len(receipts.delivered) == 3
        assert (lists[CLIENTSUCCESS] == []) == (kind is TrimmedReceipts)
