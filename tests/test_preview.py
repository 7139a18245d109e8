"""`cs-relay preview --offline`: the worker's own step, run against empty state with this
shell's settings, shows each destination's request (credentials masked) or why it holds,
skips or refuses a call; nothing is sent; the exit code says whether every message would
be delivered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.cli.commands import main
from streams.core.preview import HOLD, RELEASE, SEND, preview
from streams.core.step import step
from streams.runtime.wiring import destinations
from streams.settings import Settings
from streams.testing.pipeline import DESTINATION_VARIABLES

CS_KEY = "cs-secret-key-0123456789"
CSB_KEY = "csb-secret-key-0123456789"
ENV = {
    "CLIENTSUCCESS_SOURCE_ID": "src-1",
    "CLIENTSUCCESS_API_KEY": CS_KEY,
    "CLIENTSUCCESS_BASE_URL": "http://cs.invalid",
    "CSB_API_KEY": CSB_KEY,
    "CSB_BASE_URL": "http://csb.invalid",
}


def line(**fields) -> str:
    return json.dumps(fields)


TRACK_FIRST = [
    line(type="track", userId="u1", event="Report Created", properties={"value": 3}, messageId="t1"),
    line(type="group", userId="u1", groupId="acme", traits={"name": "Acme"}, messageId="g1"),
    line(type="track", userId="u1", event="Signed In", messageId="t2"),
]


@pytest.fixture
def env(monkeypatch):
    for name in DESTINATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def run(tmp_path, capsys, lines, *args):
    path = tmp_path / "messages.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code = main(["preview", str(path), "--offline", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_track_before_its_group_is_held_then_released_by_the_group_call(env, tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, TRACK_FIRST, "--json")
    results = [json.loads(row) for row in out.splitlines()]
    assert code == 1  # the first track would be held
    first, group, second = results
    verdicts = {o["destination"]: o["verdict"] for o in first["outcomes"]}
    assert verdicts == {"clientsuccess": HOLD, "customersuccessbox": HOLD}
    assert not first["delivered"] and group["delivered"] and second["delivered"]
    released = [o for o in group["outcomes"] if o["verdict"] == RELEASE]
    assert {(o["destination"], o["messageId"]) for o in released} == {
        ("clientsuccess", "t1"),
        ("customersuccessbox", "t1"),
    }
    cs = next(o for o in released if o["destination"] == "clientsuccess")["request"]
    assert cs["method"] == "POST"
    assert cs["url"] == "http://cs.invalid/collector/1.0.0/projects/src-1/events/Report%20Created?api_key=***"
    assert cs["json"]["identity"]["organization"] == {"id": "acme", "name": "Acme"}
    sent = {o["destination"]: o for o in second["outcomes"]}
    assert sent["clientsuccess"]["verdict"] == SEND and sent["customersuccessbox"]["verdict"] == SEND
    assert sent["customersuccessbox"]["request"]["headers"]["Authorization"] == "***"


def test_the_requests_are_the_ones_the_worker_step_makes(env):
    """Not a second implementation: the preview's request is the step's, field for field."""
    settings = Settings.from_env()
    wired = destinations(settings)
    raws = [r.encode() for r in TRACK_FIRST[1:]]
    results = preview(raws, wired, now=1_800_000_000.0, max_pending=10, max_pending_age=60.0)
    from streams.core.segment import parse

    group = step(
        "u1",
        parse(raws[0]),
        raws[0].decode(),
        {},
        None,
        _empty(),
        lambda g: None,
        wired,
        now=1_800_000_000.0,
        now_iso="2027-01-15T08:00:00+00:00",
        max_pending=10,
        max_pending_age=60.0,
    )
    track = step(
        "u1",
        parse(raws[1]),
        raws[1].decode(),
        {},
        group.user,
        group.pending,
        lambda g: group.group,
        wired,
        now=1_800_000_000.0,
        now_iso="2027-01-15T08:00:00+00:00",
        max_pending=10,
        max_pending_age=60.0,
    )
    expected = {d.destination: d.request for d in track.dispatches}
    got = {o.destination: o.request for o in results[1].outcomes if o.verdict == SEND}
    assert got == expected and len(got) == 2


def _empty():
    from streams.core.pending import Pending

    return Pending()


def test_credentials_never_show(env, tmp_path, capsys):
    lines = [*TRACK_FIRST, line(type="identify", userId="u1", traits={"email": "a@example.com"}, messageId="i1")]
    for args in ((), ("--json",)):
        code, out, err = run(tmp_path, capsys, lines, *args)
        assert CS_KEY not in out + err and CSB_KEY not in out + err
        assert "***" in out


def test_every_message_delivered_exits_0(env, tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, TRACK_FIRST[1:])
    assert code == 0, out
    assert "2 of 2 message(s) would be delivered" in out
    assert "sent now: POST http://cs.invalid/collector/1.0.0/projects/src-1/events/Signed%20In?api_key=***" in out


def test_a_refused_call_and_an_invalid_line_are_said(env, tmp_path, capsys):
    lines = [line(type="group", userId="u1", groupId="acme", messageId="g0"), line(type="track", event="x")]
    code, out, _ = run(tmp_path, capsys, lines)
    assert code == 1
    assert "refused at intake (dead-lettered): missing_field" in out
    assert "refused (dead-lettered): group_without_name" in out  # ClientSuccess needs the group's name


def test_a_json_array_and_a_single_object_are_read_too(env, tmp_path, capsys):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(json.loads(TRACK_FIRST[1]), indent=2))
    assert main(["preview", str(path), "--offline", "--json"]) == 0
    assert [json.loads(r)["messageId"] for r in capsys.readouterr().out.splitlines()] == ["g1"]
    path.write_text(json.dumps([json.loads(r) for r in TRACK_FIRST[1:]], indent=2))
    assert main(["preview", str(path), "--offline", "--json"]) == 0
    assert [json.loads(r)["messageId"] for r in capsys.readouterr().out.splitlines()] == ["g1", "t2"]


def test_input_that_is_not_json_exits_2(env, tmp_path, capsys):
    code, _, err = run(tmp_path, capsys, ['{"type": "track"', "nope"])
    assert code == 2 and "line 1: not JSON" in err


def test_the_example_in_the_operations_guide_is_what_it_prints(tmp_path, capsys, monkeypatch):
    for name in DESTINATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    block = doc.split("$ cat try.jsonl\n", 1)[1].split("```", 1)[0]
    given, shown = block.split("$ cs-relay preview --offline try.jsonl\n", 1)
    path = tmp_path / "try.jsonl"
    path.write_text(given)
    assert main(["preview", "--offline", str(path)]) == 1
    assert capsys.readouterr().out == shown
