"""bench.trackpath counts the runtime modules one track passes through
(docs/architecture.md): its profile hook tells a call into a module from a coroutine
resumed, and names what started each (a task, or a callback of the loop); its summary
counts only what comes from another module, and leaves out the timers' and the web
requests' work."""

from __future__ import annotations

import asyncio
import sys

from bench.tracehook import profiler
from bench.trackpath import on_the_path, summary

HERE = __name__


def _helper() -> int:
    return 1


def _callback() -> None:
    _helper()


async def _inner() -> None:
    await asyncio.sleep(0)


async def _main() -> None:
    _helper()  # within this module: not an entry
    asyncio.get_running_loop().call_soon(_callback)  # the loop calls it: an entry
    await _inner()  # a coroutine of this module, started and resumed from here
    await asyncio.sleep(0)


def test_the_hook_tells_calls_from_resumptions_and_names_what_started_them():
    records: list = []
    sys.setprofile(profiler(records, HERE))
    try:
        asyncio.run(_main())
    finally:
        sys.setprofile(None)
    kept = [(name, fresh, root) for _t, _m, name, _caller, fresh, root in records]
    assert kept[0] == ("_main", True, f"task {HERE}:_main")
    assert ("_callback", True, f"callback {HERE}:_callback") in kept
    assert ("_helper", True, f"callback {HERE}:_callback") in kept
    assert [fresh for name, fresh, _ in kept if name == "_inner"] == [True, False]
    assert [fresh for name, fresh, _ in kept if name == "_main"] == [True, False, False]
    row = summary(records)["by_module"][HERE]
    assert (row["entered"], row["resumed"]) == (2, 2)  # _main and _callback; _main twice after an await


def test_the_summary_counts_entries_from_elsewhere_in_the_order_reached():
    records = [
        (1.0, "streams.runtime.agents", "route", "faust.agents.agent", False, "task faust:Agent._execute_actor"),
        (1.1, "streams.runtime.handlers", "handle", "streams.runtime.agents", True, "task faust:x"),
        (1.2, "streams.runtime.handlers", "route_call", "streams.runtime.handlers", True, "task faust:x"),
        (1.3, "streams.runtime.runtime", "Runtime.user", "streams.runtime.handlers", True, "task faust:x"),
        (1.4, "streams.runtime.runtime", "Runtime.seen", "streams.runtime.handlers", True, "task faust:x"),
    ]
    result = summary(records)
    assert list(result["by_module"]) == [
        "streams.runtime.agents",
        "streams.runtime.handlers",
        "streams.runtime.runtime",
    ]
    assert (result["modules"], result["entries"]) == (3, 3)
    assert result["by_module"]["streams.runtime.runtime"]["entered"] == 2
    assert result["by_module"]["streams.runtime.agents"] == {
        "entered": 0,
        "resumed": 1,
        "first": "route (resumed from faust.agents.agent)",
    }


def test_timers_and_web_requests_are_not_the_tracks_work():
    def record(root: str) -> tuple:
        return (0.0, "streams.runtime.retries", "tick", "streams.runtime.timers", True, root)

    assert not on_the_path(record("task mode.services:Service._execute_task"))
    assert not on_the_path(record("task aiohttp.web_protocol:RequestHandler._handle_request"))
    assert on_the_path(record("task faust.agents.agent:Agent._execute_actor"))
    assert on_the_path(record("callback streams.runtime.rows:OpenPacks._lingered"))
    assert on_the_path(record("task streams.runtime.senders:Lane._serve"))


def test_the_docs_table_of_one_tracks_path_is_the_newest_measured_one():
    """docs/architecture.md's table ("One track's path") is `bench.trackpath`'s, as
    measured in the newest committed run (`--json` into bench/results), so the doc and
    the measurement cannot drift apart."""
    import json
    from pathlib import Path

    from bench.trackpath import markdown_table

    repo = Path(__file__).resolve().parents[1]
    newest = max((repo / "bench" / "results").glob("*-trackpath.json"))
    result = json.loads(newest.read_text())
    assert result["modules"] == len(result["by_module"])
    assert result["entries"] == sum(row["entered"] for row in result["by_module"].values())
    doc = (repo / "docs" / "architecture.md").read_text()
    assert markdown_table(result) in doc
    assert f"**{result['modules']} modules, {result['entries']} entries**" in doc
