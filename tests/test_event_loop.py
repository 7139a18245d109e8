"""The worker's event loop (CS_RELAY_EVENT_LOOP, streams/eventloop.py): uvloop by default,
asyncio's own when asked for or when uvloop cannot be imported; a bad value refused
naming the variable; a real worker runs on the loop it was given, whatever Faust's
FAUST_LOOP says, and answers it on `GET /version`."""

from __future__ import annotations

import asyncio
import logging
import sys

import aiohttp
import pytest
import uvloop

from streams import eventloop
from streams.settings import Settings, SettingsError
from tests.pipeline import REPO, Pipeline, Worker
from tests.test_cli import cs_relay, one_error_line


@pytest.fixture
def restore_policy():
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


def _new_loop_name() -> str:
    loop = asyncio.new_event_loop()
    try:
        return eventloop.name_of(loop)
    finally:
        loop.close()


@pytest.mark.parametrize(("name", "loop_type"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.SelectorEventLoop)])
def test_select_installs_the_policy_of_the_loop_named(restore_policy, name, loop_type):
    other = "asyncio" if name == "uvloop" else "uvloop"
    eventloop.select(other)
    assert eventloop.select(name) == name
    loop = asyncio.new_event_loop()
    try:
        assert type(loop) is loop_type and eventloop.name_of(loop) == name
    finally:
        loop.close()


def test_without_uvloop_the_worker_falls_back_to_asyncio_and_says_so(restore_policy, monkeypatch, caplog):
    eventloop.select("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    with caplog.at_level(logging.WARNING, logger="cs_relay"):
        assert eventloop.select("uvloop") == "asyncio"
    assert _new_loop_name() == "asyncio"
    assert "uvloop is not installed" in caplog.text and "CS_RELAY_EVENT_LOOP" in caplog.text


def test_select_refuses_an_unknown_loop(restore_policy):
    with pytest.raises(ValueError, match="uvloop, asyncio"):
        eventloop.select("trio")


def test_running_names_the_loop_of_the_caller():
    assert eventloop.running() == "none"
    assert asyncio.run(_running()) == "asyncio"
    assert uvloop.run(_running()) == "uvloop"


async def _running() -> str:
    return eventloop.running()


def test_the_setting_defaults_to_uvloop_and_takes_asyncio_in_any_case():
    assert Settings.from_env({}).event_loop == "uvloop"
    assert Settings.from_env({"CS_RELAY_EVENT_LOOP": " AsyncIO "}).event_loop == "asyncio"
    with pytest.raises(SettingsError, match=r"^CS_RELAY_EVENT_LOOP: expected uvloop or asyncio \(got 'trio'\)"):
        Settings.from_env({"CS_RELAY_EVENT_LOOP": "trio"})


def test_a_worker_with_a_bad_event_loop_stops_with_one_line_naming_the_variable():
    line = one_error_line(cs_relay("worker", CS_RELAY_EVENT_LOOP="aio"))
    assert "CS_RELAY_EVENT_LOOP" in line and "expected uvloop or asyncio" in line


LOOPS = [
    ({}, "uvloop"),  # the default
    ({"CS_RELAY_EVENT_LOOP": "asyncio", "FAUST_LOOP": "uvloop"}, "asyncio"),  # the setting decides, not Faust's
    ({"CS_RELAY_EVENT_LOOP": "uvloop", "FAUST_LOOP": "aio"}, "uvloop"),
]


@pytest.mark.e2e
async def test_a_worker_runs_on_the_loop_it_is_given(kafka_bootstrap, partner_mocks, tmp_path):
    """Each case's worker on a pipeline of its own, the three started at once (their
    starts side by side, not one after another)."""
    pipelines: list[Pipeline] = []
    workers: list[Worker] = []
    for n in range(len(LOOPS)):
        (tmp_path / f"case-{n}").mkdir()
        pipelines.append(Pipeline(kafka_bootstrap, partner_mocks, tmp_path / f"case-{n}", cwd=REPO))
    try:
        workers.extend(pipe.start_worker(**env) for pipe, (env, _) in zip(pipelines, LOOPS, strict=True))
        await asyncio.gather(*(pipe.wait_ready(worker) for pipe, worker in zip(pipelines, workers, strict=True)))
        for pipe, worker, (_, expected) in zip(pipelines, workers, LOOPS, strict=True):
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{worker.web_port}/version") as response:
                    assert response.status == 200
                    assert (await response.json())["event_loop"] == expected
            await pipe.eventually(
                lambda worker=worker: asyncio.sleep(0, worker.log.read_text(errors="replace")),
                lambda text, expected=expected: f"event loop: {expected}" in text,
                what=f"the worker's 'event loop: {expected}' line",
            )
    finally:
        for worker in workers:  # told at once: they stop side by side
            if worker.alive:
                worker.process.terminate()
        for pipe in pipelines:
            await pipe.close()
