"""The operator CLI as operators meet it: one line and exit status 2 when Kafka or a
worker cannot be reached, `--version`, `config`, and `send`'s bounded window and progress."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError

from streams import __version__
from streams.cli.commands import main
from streams.ops import producer as producer_module
from streams.ops.progress import Progress

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "streams" / "samples" / "segment-sample.jsonl"
NOBODY = "127.0.0.1:1"  # a privileged port nothing listens on: connections are refused at once


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CS_RELAY_", "KAFKA_", "CLIENTSUCCESS_", "CSB_", "WEBHOOK_"))
    }
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def cs_relay(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=clean_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --------------------------------------------------------------------------- unreachable


@pytest.mark.parametrize(
    "command",
    [
        ["send", str(SAMPLE)],
        ["dlq", "list"],
        ["dlq", "list", "--json"],
        ["dlq", "replay"],
        ["worker"],
    ],
)
def test_an_unreachable_broker_is_one_line_and_exit_2(command, tmp_path):
    result = cs_relay(*command, KAFKA_BOOTSTRAP_SERVERS=NOBODY, CS_RELAY_DATA_DIR=str(tmp_path))
    line = one_error_line(result)
    assert line == f"error: cannot reach Kafka at {NOBODY} (KAFKA_BOOTSTRAP_SERVERS): no broker answered"
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["inspect", "user", "u1"]])
def test_an_unreachable_worker_is_one_line_and_exit_2(command):
    result = cs_relay(*command, "--url", f"http://{NOBODY}")
    assert one_error_line(result).startswith(f"error: cannot reach the worker at http://{NOBODY}/")


def test_a_worker_url_that_is_no_url_is_one_line_too():
    line = one_error_line(cs_relay("status", "--url", "localhost:6066"))
    assert line.startswith("error: cannot reach the worker at localhost:6066/status")


def test_a_peer_that_does_not_speak_http_is_one_line(capsys):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_garbage() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"garbage\r\n\r\n")

        async def both() -> int:
            serving = asyncio.create_task(asyncio.to_thread(answer_garbage))
            code = await asyncio.to_thread(main, ["status", "--url", f"http://127.0.0.1:{port}"])
            await serving
            return code

        assert asyncio.run(both()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the worker" in err and "BadStatusLine" in err


def test_ingest_on_a_taken_port_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cs_relay("ingest", "--port", str(port), CS_RELAY_WRITE_KEYS="k1", KAFKA_BOOTSTRAP_SERVERS=NOBODY)
    assert one_error_line(result) == f"error: cannot listen on 127.0.0.1:{port}: address already in use"


def test_a_failed_send_is_one_line(monkeypatch, tmp_path, capsys):
    """Kafka takes the connection but never acknowledges: the error, not a traceback."""
    monkeypatch.setattr(producer_module, "_producer", lambda bootstrap, security: FakeProducer(fail_at=3))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"type": "track", "userId": f"u{i}", "event": "e"}) + "\n" for i in range(10)))
    assert main(["send", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        err[-1] == "error: Kafka at 127.0.0.1:9 (KAFKA_BOOTSTRAP_SERVERS) did not answer in time: "
        "KafkaTimeoutError: no acknowledgement"
    )
    assert not any("Traceback" in line for line in err)


# --------------------------------------------------------------------------- --version, config


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"cs-relay {__version__}\n"


SECRET = "s3cret-csb-key-value"
TOKEN = "admin-token-0123456789"


def test_config_names_each_setting_by_its_variable_and_marks_destinations(monkeypatch, capsys):
    for name in list(os.environ):
        if name.startswith(("CS_RELAY_", "KAFKA_", "CLIENTSUCCESS_", "CSB_", "WEBHOOK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CSB_API_KEY", SECRET)
    monkeypatch.setenv("CSB_BASE_URL", "https://acme.customersuccessbox.com")
    monkeypatch.setenv("CS_RELAY_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("WEBHOOK_URL", "https://hooks.example.com/in")
    monkeypatch.setenv("WEBHOOK_HEADERS", json.dumps({"Authorization": f"Bearer {SECRET}"}))
    monkeypatch.setenv("CS_RELAY_WEB_PORT", "7000")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and TOKEN not in out
    # Whose settings these are, and how to see a running worker's.
    assert out.startswith("# The settings this shell's environment gives a worker started here")
    assert "cs-relay config --url" in out.splitlines()[0]
    head, variables = out.split("\nvariables:\n")
    assert "  ClientSuccess       off (set CLIENTSUCCESS_SOURCE_ID and CLIENTSUCCESS_API_KEY to enable it)" in head
    assert "  CustomerSuccessBox  on" in head and "  Webhooks            on" in head
    lines = dict(line.split(" = ", 1) for line in variables.splitlines())
    assert lines["CS_RELAY_WEB_PORT"] == "7000" and lines["CS_RELAY_ADMIN_TOKEN"] == "***"
    assert lines["CSB_API_KEY"] == "***" and lines["CSB_BASE_URL"] == "https://acme.customersuccessbox.com"
    assert lines["WEBHOOK_URL"] == "https://hooks.example.com/in"
    assert lines["CLIENTSUCCESS_API_KEY"] == "(unset)"  # unset: disabled, and visibly so
    assert (
        lines["CS_RELAY_TOPIC_PARTITIONS"] == "8  (default)"
        and lines["KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT  (default)"
    )
    # Every variable cs-relay reads, by the name a user sets, and nothing else.
    from streams.destinations import REGISTRY
    from streams.kafkaconn import VARIABLES as KAFKA_VARIABLES

    expected = {v.name for p in REGISTRY for v in p.variables} | set(KAFKA_VARIABLES) | {"KAFKA_BOOTSTRAP_SERVERS"}
    assert expected <= set(lines) and all(re.fullmatch(r"[A-Z][A-Z0-9_]+", name) for name in lines)
    assert {"CS_RELAY_MAPPINGS", "CS_RELAY_DATA_DIR", "CS_RELAY_LOG_FORMAT"} <= set(lines)
    assert main(["config", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"] == "environment" and doc["variables"].keys() == lines.keys()
    assert doc["variables"]["CSB_API_KEY"] == {"value": "***", "set": True}
    assert doc["variables"]["CS_RELAY_WEB_PORT"] == {"value": 7000, "set": True}
    assert doc["destinations"]["clientsuccess"]["enabled"] is False
    assert SECRET not in json.dumps(doc)


def test_config_names_each_bad_variable_and_exits_1(monkeypatch, capsys):
    bad = {
        "CS_RELAY_WEB_PORT": "http",
        "CS_RELAY_LOG_LEVEL": "loud",
        "CS_RELAY_ADMIN_TOKEN": "tiny-tok",
        "CSB_BASE_URL": "ftp://nope",
        "WEBHOOK_URL": "not a url",
        "CS_RELAY_WRITE_KEYS": "k1,,k2",
        "CS_RELAY_MAX_IN_FLIGHT": "0",
    }
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    assert main(["config"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = captured.err.splitlines()
    assert errors[-1] == f"{len(bad)} invalid setting(s)"
    named = [line.split(":", 2)[1].strip() for line in errors[:-1]]
    assert sorted(named) == sorted(bad)
    assert "tiny-tok" not in captured.err  # the admin token is a secret, even a bad one
    # The worker still stops at the first bad variable, with the same message.
    from streams.settings import Settings, SettingsError

    with pytest.raises(SettingsError) as first:
        Settings.from_env()
    assert f"error: {first.value}" in errors


# --------------------------------------------------------------------------- send


class FakeProducer:
    """Acknowledges the oldest outstanding record on each turn of the loop (or fails it),
    and records how many were outstanding at most."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []
        self.outstanding: list[asyncio.Future] = []
        self.most_outstanding = 0
        self.fail_at = fail_at
        self._acker: asyncio.Task | None = None

    async def start(self) -> None:
        self._acker = asyncio.create_task(self._ack())

    async def _ack(self) -> None:
        while True:
            await asyncio.sleep(0)
            if self.outstanding:
                future = self.outstanding.pop(0)
                if self.fail_at is not None and len(self.sent) >= self.fail_at:
                    future.set_exception(KafkaTimeoutError("no acknowledgement"))
                else:
                    future.set_result(None)

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.sent.append((value, key))
        self.outstanding.append(future)
        self.most_outstanding = max(self.most_outstanding, len(self.outstanding))
        return future

    async def stop(self) -> None:
        if self._acker:
            self._acker.cancel()


def test_send_keeps_a_bounded_number_of_records_in_flight(monkeypatch, tmp_path):
    fake = FakeProducer()
    monkeypatch.setattr(producer_module, "_producer", lambda bootstrap, security: fake)
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"type": "track", "userId": f"u{i % 7}", "event": f"e{i}"}) for i in range(2000)]
    path.write_text("\n".join(lines[:1000]) + "\n\n" + "\n".join(lines[1000:]))  # a blank line is skipped
    stream, out = io.StringIO(), io.StringIO()
    clock = iter(range(10**6)).__next__  # a second per reading: a line each update
    progress = Progress("sent", total=path.stat().st_size, stream=stream, tty=False, clock=clock, interval=100)
    code = asyncio.run(producer_module.send_file(path, "x:1", "topic", in_flight=50, progress=progress, out=out))
    assert code == 0
    assert [value for value, _ in fake.sent] == [line.encode() for line in lines]
    assert fake.sent[8][1] == b"u1"  # keyed by user
    assert 1 < fake.most_outstanding <= 50
    assert out.getvalue() == f"sent 2000 messages from {path} to topic\n"
    shown = stream.getvalue().splitlines()
    assert len(shown) >= 2 and shown[-1].startswith("sent 2,000, 100%, ")
    assert all(line.startswith("sent ") and "/s" in line for line in shown)


def test_send_says_one_message_in_the_singular(monkeypatch, tmp_path):
    fake = FakeProducer()
    monkeypatch.setattr(producer_module, "_producer", lambda bootstrap, security: fake)
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"type": "track", "userId": "u1", "event": "e"}) + "\n")
    out = io.StringIO()
    progress = Progress("sent", total=path.stat().st_size, stream=io.StringIO(), tty=False)
    assert asyncio.run(producer_module.send_file(path, "x:1", "topic", progress=progress, out=out)) == 0
    assert out.getvalue() == f"sent 1 message from {path} to topic\n"


def test_progress_on_a_terminal_is_one_redrawn_line_with_a_bar_and_a_rate():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress("sent", total=1000, stream=stream, tty=True, clock=lambda: now[0])
    now[0] = 0.1
    progress.update(50, 100)  # within the redraw interval: not drawn
    assert stream.getvalue() == ""
    now[0] = 2.0
    progress.update(400, 500)
    assert (
        stream.getvalue() == "\r\033[K" + "sent 400  [############............]   50%  200/s  0:02 left  0:02 elapsed"
    )
    now[0] = 4.0
    progress.update(800)
    progress.finish()
    assert stream.getvalue().endswith("\r\033[Ksent 800  [########################]  100%  200/s  0:04 elapsed\n")


def test_progress_elsewhere_is_a_plain_line_every_few_seconds():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress("replayed", stream=stream, tty=False, clock=lambda: now[0])
    for second in range(1, 12):
        now[0] = float(second)
        progress.update(second * 10)
    progress.finish()
    assert stream.getvalue().splitlines() == [
        "replayed 50, 10/s, 0:05 elapsed",
        "replayed 100, 10/s, 0:10 elapsed",
        "replayed 110, 10/s, 0:11 elapsed",
    ]
