"""End to end, the README's five-minute walkthrough (issue 25.5) against a real worker,
the real broker and the mock partners: a first start that logs no error, a track held
before its group call and released by it (`inspect pending`), `inspect user`'s note on
its copy of the group, `config --url` showing the running worker's settings, and a 401
that says to export CS_RELAY_ADMIN_TOKEN."""

from __future__ import annotations

import json
import re

import pytest

from tests.pipeline import Pipeline
from tests.test_e2e_admin import get_json, run_cli, seg, wait_ready

pytestmark = pytest.mark.e2e

TOKEN = "walkthrough-token-5e8a1c"


async def test_the_walkthrough(pipeline: Pipeline, capsys, monkeypatch):
    worker = pipeline.start_worker(CS_RELAY_ADMIN_TOKEN=TOKEN)
    await wait_ready(pipeline, worker, token=TOKEN)
    base = f"http://127.0.0.1:{worker.web_port}"

    # A first start (new consumer group, new topics) logs no ERROR line and no warning
    # from Faust about settings configured twice.
    log = worker.log.read_text(errors="replace")
    assert "Discovered coordinator" in log, worker.log_tail()
    assert not re.search(r"\[ERROR\]|Traceback|AlreadyConfiguredWarning", log), worker.log_tail(80)

    # Without the token in this shell: a 401 that says what to do.
    monkeypatch.delenv("CS_RELAY_ADMIN_TOKEN", raising=False)
    code, _, err = await run_cli(capsys, "status", "--url", base)
    assert code == 1 and "401" in err and "export CS_RELAY_ADMIN_TOKEN=" in err, err
    monkeypatch.setenv("CS_RELAY_ADMIN_TOKEN", TOKEN)

    # A track before the user's group call: held for the partners that need the group.
    await pipeline.send(seg("track", "u-ada", 1, event="Report Built"))
    await pipeline.eventually(
        lambda: get_json(worker, "/pending/u-ada", TOKEN),
        lambda a: a[0] == 200 and a[1]["queues"].get("clientsuccess", {}).get("held"),
        what="the held track",
    )
    code, out, _ = await run_cli(capsys, "inspect", "pending", "u-ada", "--url", base)
    held = json.loads(out)["queues"]["clientsuccess"]["held"]
    assert code == 0 and held[0]["message"]["event"] == "Report Built"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", held[0]["held_at"]), held
    assert "seq" not in out and '"v"' not in out

    # The group call releases it.
    await pipeline.send(seg("group", "u-ada", 2, groupId="acme", traits={"name": "Acme", "account_id": "acc-1"}))
    await pipeline.eventually(
        lambda: get_json(worker, "/pending/u-ada", TOKEN),
        lambda a: a[0] == 200 and not any(q.get("held") or q.get("releasing") for q in a[1]["queues"].values()),
        what="the track released",
    )
    await pipeline.eventually(
        lambda: pipeline.cs_requests(),
        lambda r: any(x["path"].endswith("/events/Report Built") for x in r),
        what="the track sent",
    )

    code, out, _ = await run_cli(capsys, "inspect", "user", "u-ada", "--url", base)
    assert code == 0 and "\n\ngroup_copy: this user's own copy of group 'acme'" in out
    assert "Partners receive the newer of this copy and the group's own record" in out

    # The running worker's settings, not this shell's: its partitions, its data dir.
    code, out, _ = await run_cli(capsys, "config", "--url", base)
    assert code == 0, out
    assert out.startswith(f"# The settings of the worker at {base}, as it read them from its environment")
    lines = dict(line.split(" = ", 1) for line in out.split("\nvariables:\n")[1].splitlines())
    assert lines["CS_RELAY_TOPIC_PARTITIONS"] == str(pipeline.partitions)
    assert lines["CS_RELAY_APP_ID"] == pipeline.name and lines["CS_RELAY_ADMIN_TOKEN"] == "***"
    assert TOKEN not in out
    assert re.search(r"\n  ClientSuccess +on\n", out) and re.search(r"\n  Webhooks +on\n", out)
