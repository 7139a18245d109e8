"""`cs-relay dev`: what each worker gets, the option's parsing, and the demo of `make run`."""

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from devtools.dev import demo_run_tag, dev_environment, shares_every_partition, worker_specs
from streams.cli.commands import _parser
from streams.ops.producer import tag_message_id


def test_each_dev_worker_has_its_own_data_dir_port_and_log(monkeypatch):
    monkeypatch.delenv("CS_RELAY_DATA_DIR", raising=False)
    monkeypatch.delenv("CS_RELAY_WEB_PORT", raising=False)
    env = dev_environment("127.0.0.1:9092")
    specs = worker_specs(env, 3, Path("var/dev"))
    assert [s.env["CS_RELAY_DATA_DIR"] for s in specs] == [f"var/dev/worker-{i}" for i in range(3)]
    assert [s.env["CS_RELAY_WEB_PORT"] for s in specs] == ["6066", "6067", "6068"]
    assert [s.log for s in specs] == [Path(f"var/dev/worker-{i}.log") for i in range(3)]
    assert [s.url for s in specs] == [f"http://127.0.0.1:{6066 + i}" for i in range(3)]
    # Everything else is shared: one consumer group, the same mocks and credentials.
    shared = {k: v for k, v in env.items() if k not in ("CS_RELAY_DATA_DIR", "CS_RELAY_WEB_PORT")}
    for spec in specs:
        assert {k: v for k, v in spec.env.items() if k in shared} == shared
    assert "CS_RELAY_WEB_PORT" not in env and env["CS_RELAY_DATA_DIR"] == "var/dev/worker"


def test_dev_workers_count_from_a_chosen_port_and_data_dir():
    env = {"CS_RELAY_DATA_DIR": "/srv/relay", "CS_RELAY_WEB_PORT": "7000"}
    specs = worker_specs(env, 2, Path("logs"))
    assert [(s.env["CS_RELAY_DATA_DIR"], s.env["CS_RELAY_WEB_PORT"], str(s.log)) for s in specs] == [
        ("/srv/relay-0", "7000", "logs/worker-0.log"),
        ("/srv/relay-1", "7001", "logs/worker-1.log"),
    ]


def test_dev_workers_option():
    parser = _parser()
    assert parser.parse_args(["dev", "--demo"]).workers == 1
    assert parser.parse_args(["dev", "--workers", "3"]).workers == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["dev", "--workers", bad])


def test_a_demo_run_tags_the_sample_message_ids():
    line = b'{"type":"track","userId":"u1","event":"E","messageId":"sample-0007"}'
    tagged = json.loads(tag_message_id(line, "demo-1"))
    assert tagged == {"type": "track", "userId": "u1", "event": "E", "messageId": "demo-1-sample-0007"}
    # Two lines that share a messageId still share it: a duplicate in the file stays one.
    assert tag_message_id(line, "demo-1") == tag_message_id(line, "demo-1") != tag_message_id(line, "demo-2")
    # What the worker is meant to dead-letter reaches it byte for byte.
    for raw in (
        b'{"type":"track",',
        b"[1, 2]",
        b'{"type":"track","userId":"u1","messageId":7}',
        b'{"type":"x"}',
        b'{"type":"track","userId":"u1","event":"\\ud800","messageId":"m"}',
    ):
        assert tag_message_id(raw, "demo-1") == raw
    assert demo_run_tag(0) == "demo-19700101T000000Z"


def test_the_demo_waits_for_a_formed_group():
    def ready(*parts):
        return (200, {"partitions": {"x-by-user": list(parts), "x-users-changelog": [9]}})

    assert shares_every_partition([ready(0, 2), ready(1, 3)], "x-by-user", 4)
    assert shares_every_partition([ready(0, 1), ready()], "x-by-user", 2)  # more workers than partitions
    assert not shares_every_partition([ready(0, 1), ready(1)], "x-by-user", 3)  # 2 missing
    assert not shares_every_partition([ready(0, 1), ready(1, 2)], "x-by-user", 3)  # 1 twice: mid-rebalance
    assert not shares_every_partition([ready(0, 1, 2), (503, {"ready": False})], "x-by-user", 3)
    assert not shares_every_partition([ready(0), (0, None)], "x-by-user", 1)
    assert not shares_every_partition([], "x-by-user", 1)


def _summary_counts(output: str) -> dict[str, tuple[int, int]]:
    """Requests and accepted per partner, from the demo's closing table (devtools/demo_report.py)."""
    found = re.findall(r"^(ClientSuccess|CustomerSuccessBox) +\S+ +\S+ +(\d+) +(\d+) ", output, re.M)
    return {name: (int(total), int(accepted)) for name, total, accepted in found}


@pytest.mark.e2e
def test_make_run_demo_delivers_its_sample_again_when_run_a_second_time(kafka_bootstrap, tmp_path):
    """`make run` is `cs-relay dev --demo`: sample traffic in, each partner's requests out.
    Run twice in one directory (var/dev/ keeps the state, the broker keeps the topics),
    the second time with two workers, the second run must deliver as much as the first
    instead of dropping its traffic as duplicates of the first run's messageIds."""
    from streams.ops.webserve import free_port

    name = f"demo-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CS_RELAY_APP_ID": name,
        "CS_RELAY_INPUT_TOPIC": f"{name}-in",
        "CS_RELAY_DLQ_TOPIC": f"{name}-dlq",
        "CS_RELAY_WEB_PORT": str(free_port()),
    }
    args = [
        sys.executable,
        "-m",
        "streams.cli",
        "dev",
        "--demo",
        "--exit",
        "--clientsuccess-port",
        str(free_port()),
        "--csb-port",
        str(free_port()),
        "--webhook-port",
        str(free_port()),
    ]
    runs = []
    for extra in ([], ["--workers", "2"]):
        done = subprocess.run(args + extra, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        runs.append(_summary_counts(done.stdout))
    first, second = runs
    assert set(first) == {"ClientSuccess", "CustomerSuccessBox"}, first
    for partner, (total, accepted) in first.items():
        assert total >= 10 and accepted == total, (partner, first)
    assert second == first
