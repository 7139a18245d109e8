"""A port some other program holds is one line naming it and what changes it, exit 2,
before anything waits: `cs-relay worker` (its web port) and `cs-relay mocks`. No broker
is needed: the check comes before the worker reaches for Kafka."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.destinations import REGISTRY
from streams.ops.webserve import free_port

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def cs_relay(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CS_RELAY_", "KAFKA_"))}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**clean, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, time.monotonic() - began


def test_a_worker_whose_web_port_is_taken_says_so_at_once():
    with held_port() as port:
        done, took = cs_relay("worker", CS_RELAY_WEB_PORT=str(port))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: port {port} (the worker's web server) is already in use: stop what listens there or "
        "choose another port with CS_RELAY_WEB_PORT"
    ]
    assert took < 15  # no wait for Kafka (none answers at 127.0.0.1:9)


def test_mocks_on_a_taken_port_say_which_option_moves_it():
    ports = {p.key: free_port() for p in REGISTRY}
    last = REGISTRY[-1]
    with held_port() as port:
        ports[last.key] = port
        args = [arg for p in REGISTRY for arg in (f"--{p.mock.option}-port", str(ports[p.key]))]
        done, _ = cs_relay("mocks", *args)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: port {port} (the {last.key} mock) is already in use")
    assert line.endswith(f"--{last.mock.option}-port")
