"""`cs-relay dev --workers N`: what each worker gets, and the option's parsing."""

from pathlib import Path

import pytest

from streams.cli import _parser
from streams.dev import dev_environment, worker_specs


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
