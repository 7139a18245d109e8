"""`cs-relay dev` stops when told and never leaves a child behind (issue 22, finding 9).

Killed with SIGKILL, its children (mocks, workers, the Kafka JVM) used to keep running,
holding their ports; with a mock's port taken it waited 30 s and printed a traceback.
Now every child dies with it (`streams.childproc`), SIGTERM stops everything in order,
and a port in use is one line naming it and its option, exit 2, before anything starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.dev import planned_ports, worker_specs
from streams import childproc
from streams.destinations import REGISTRY
from streams.ops.webserve import free_port
from streams.ports import Wanted, port_problem

REPO = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    """Running (a zombie, killed and waiting for its reaper, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@contextmanager
def _listening(port: int = 0) -> Iterator[int]:
    """Another program holding a port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock.getsockname()[1]


# ------------------------------------------------------------------------- children


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_its_parent_even_killed(tmp_path):
    """A parent starts a child with `dies_with_parent()` and is SIGKILLed: the child goes too;
    one started without it stays (what `dev`'s children did). All three wait on a pipe the
    test holds (the children inherit the parent's stdin): none ends before the test says,
    the parent's death closes nothing they read, and none outlives the test."""
    script = (
        "import subprocess, sys\n"
        "from streams import childproc\n"
        "quiet = subprocess.DEVNULL\n"
        "bound = subprocess.Popen(['cat'], stdout=quiet, preexec_fn=childproc.dies_with_parent())\n"
        "free = subprocess.Popen(['cat'], stdout=quiet)\n"
        "print(bound.pid, free.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    bound, free = (int(pid) for pid in parent.stdout.readline().split())  # type: ignore[union-attr]
    try:
        assert _alive(bound) and _alive(free)
        parent.kill()
        parent.wait(10)
        _wait_for(lambda: not _alive(bound), 5, "the bound child to die with its parent")
        assert _alive(free)
    finally:
        parent.stdin.close()  # type: ignore[union-attr]  # the children's end of input: they finish
        for pid in (bound, free):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_signal_interrupts_and_a_second_one_during_the_stop_kills_the_children():
    # As `cs-relay dev` starts: Python's own SIGINT handler, whatever an earlier test in
    # this process (an event loop's signal handlers) left behind (CI saw it once fail).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    children = childproc.Children()
    try:
        sleeper = children.add(subprocess.Popen(["sleep", "300"]))
        other = subprocess.Popen(["sleep", "300"])  # started by others' code (as LocalKafka's JVM)
        children.pids.append(other.pid)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for(lambda: False, 5, "the signal")
        assert sleeper.poll() is None
        children.stopping = True  # what `dev`'s finally does before stopping them in order
        os.kill(os.getpid(), signal.SIGINT)  # impatient: no KeyboardInterrupt now, everything killed
        _wait_for(lambda: sleeper.poll() is not None and other.poll() is not None, 10, "both children killed")
        assert sleeper.returncode == -signal.SIGKILL and other.returncode == -signal.SIGKILL
    finally:
        children.restore()
        signal.signal(signal.SIGINT, previous_int)
        for proc in (sleeper, other):
            proc.kill()
    assert signal.getsignal(signal.SIGTERM) != children._on_signal


def test_a_signal_ignored_before_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        children = childproc.Children()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == children._on_signal
        children.restore()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_sigint_ignored_by_a_script_still_stops_it_and_its_children():
    """A script's background job (`cs-relay dev &` in a shell without job control)
    starts with SIGINT ignored; Ctrl-C reaches it all the same (the script's process
    group) and must stop it and its children, not leave them running after the script.
    Only SIGHUP's being ignored (nohup) is kept."""
    script = (
        "import signal, subprocess, sys\n"
        "from streams import childproc\n"
        "children = childproc.Children()\n"
        "child = children.add(subprocess.Popen(['sleep', '300']))\n"
        "try:\n"
        "    print(child.pid, flush=True)  # in the try: the test's Ctrl-C may come right after it\n"
        "    while True:  # running until a signal's handler raises\n"
        "        signal.pause()\n"
        "except KeyboardInterrupt:\n"
        "    child.terminate()\n"
        "    child.wait(10)\n"
        "    print('stopped', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as `cmd &` in a script
    )
    child = int(proc.stdout.readline())  # type: ignore[union-attr]
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert proc.stdout.read().strip() == "stopped"  # type: ignore[union-attr]
        assert not _alive(child)
    finally:
        proc.kill()
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_dies_with_parent_is_a_preexec_function_here():
    fn = childproc.dies_with_parent()
    assert (fn is not None) == sys.platform.startswith("linux")


# ------------------------------------------------------------------------- ports


def test_a_port_in_use_is_one_line_naming_it_and_its_option():
    with _listening() as taken:
        free = free_port()
        wanted = [
            Wanted(free, "127.0.0.1", "the ClientSuccess mock", "--clientsuccess-port"),
            Wanted(taken, "127.0.0.1", "the CustomerSuccessBox mock", "--csb-port"),
        ]
        assert port_problem(wanted) == (
            f"port {taken} (the CustomerSuccessBox mock) is already in use: stop what listens there "
            "or choose another port with --csb-port"
        )
        # What listens on every address holds the port on loopback too.
    with socket.socket() as everywhere:
        everywhere.bind(("0.0.0.0", 0))
        everywhere.listen()
        port = everywhere.getsockname()[1]
        assert port_problem([Wanted(port, "127.0.0.1", "Kafka", "--kafka-port")]) is not None
    assert port_problem([Wanted(free_port(), "127.0.0.1", "Kafka", "--kafka-port"), Wanted(0, "", "x", "y")]) is None


def test_a_port_wanted_twice_is_named():
    port = free_port()
    problem = port_problem(
        [Wanted(port, "127.0.0.1", "the ClientSuccess mock", "--clientsuccess-port"), Wanted(port, "", "w", "V")]
    )
    assert problem == (
        f"port {port} is wanted twice: by the ClientSuccess mock (--clientsuccess-port) and by w (V): "
        "give one of them another port"
    )


def test_dev_plans_each_port_with_what_changes_it():
    env = {"CS_RELAY_DATA_DIR": "d", "CS_RELAY_WEB_PORT": "7000"}
    wanted = planned_ports(worker_specs(env, 2, Path("v")), "127.0.0.1", {"clientsuccess": 8001}, 9092)
    mocks = [(8001 if p.key == "clientsuccess" else p.mock.port, f"--{p.mock.option}-port") for p in REGISTRY]
    assert [(w.port, w.change) for w in wanted] == [
        (9092, "--kafka-port"),
        *mocks,
        (7000, "CS_RELAY_WEB_PORT"),
        (7001, "CS_RELAY_WEB_PORT (worker 1 listens on it + 1)"),
    ]
    assert wanted[1].what == "the ClientSuccess mock" and wanted[-1].what == "worker 1's web server"
    assert [w.port for w in planned_ports([], "", None, None)] == [p.mock.port for p in REGISTRY]  # an existing broker


# ------------------------------------------------------------------------- cs-relay dev, for real


def _dev_env(**extra: str) -> dict[str, str]:
    name = f"devstop-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CS_RELAY_")}
    env.update(
        CS_RELAY_APP_ID=name,
        CS_RELAY_INPUT_TOPIC=f"{name}-in",
        CS_RELAY_DLQ_TOPIC=f"{name}-dlq",
        CS_RELAY_WEB_PORT=str(free_port()),
        CS_RELAY_SHUTDOWN_TIMEOUT="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _mock_args(taken: int | None = None) -> list[str]:
    """Each mock on a free port; the last one on `taken` if given."""
    ports = [free_port() for _ in REGISTRY]
    if taken is not None:
        ports[-1] = taken
    return [arg for p, port in zip(REGISTRY, ports, strict=True) for arg in (f"--{p.mock.option}-port", str(port))]


def _start_dev(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "dev.out"
    with out.open("wb") as handle:
        dev = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "dev", *args],
            env=env,
            cwd=tmp_path,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    return dev, out


def _wait_running(dev: subprocess.Popen, out: Path, timeout: float) -> None:
    def running() -> bool:
        assert dev.poll() is None, out.read_text()
        return "worker 0 running at" in out.read_text()

    _wait_for(running, timeout, "cs-relay dev's worker to run")


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.e2e
def test_dev_killed_takes_kafka_the_mocks_and_the_worker_along(tmp_path):
    """Its own Kafka (the JVM), the mocks and a worker: SIGKILL `dev`, all of them go."""
    env = _dev_env()
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    dev, out = _start_dev(tmp_path, env, "--kafka-port", "0", *_mock_args())
    children: list[int] = []
    try:
        _wait_running(dev, out, 240)
        children = _children(dev.pid)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in children]
        assert len(children) == 3, commands  # Kafka's JVM, the mocks, the worker
        assert any(b"kafka.Kafka" in c for c in commands) and any(b"mocks" in c for c in commands), commands
        dev.kill()
        dev.wait(10)
        _wait_for(lambda: not any(_alive(pid) for pid in children), 5, "every child of the killed dev to be gone")
    finally:
        dev.kill()
        _kill_all(children)


@pytest.mark.e2e
def test_dev_stops_everything_on_sigterm(kafka_bootstrap, tmp_path):
    env = _dev_env(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    dev, out = _start_dev(tmp_path, env, *_mock_args())
    children: list[int] = []
    try:
        _wait_running(dev, out, 180)
        children = _children(dev.pid)
        assert len(children) == 2, children  # the mocks, the worker
        dev.terminate()
        began = time.monotonic()
        assert dev.wait(30) == 0, out.read_text()
        took = time.monotonic() - began
        assert not any(_alive(pid) for pid in children)
        assert out.read_text().rstrip().endswith("stopped")
        assert took < 2 + 10, took  # the worker's shutdown timeout + its margin
    finally:
        dev.kill()
        _kill_all(children)


@pytest.mark.e2e
@pytest.mark.parametrize("which", ["mock", "worker", "kafka"])
def test_dev_with_a_port_in_use_says_so_in_one_line_at_once(kafka_bootstrap, tmp_path, which):
    with _listening() as taken:
        env = _dev_env(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
        args = _mock_args()
        if which == "mock":
            last = REGISTRY[-1]
            args = _mock_args(taken)
            expected, option = f"port {taken} (the {last.name} mock)", f"--{last.mock.option}-port"
        elif which == "worker":
            env["CS_RELAY_WEB_PORT"], expected = str(taken), f"port {taken} (worker 0's web server)"
            option = "CS_RELAY_WEB_PORT"
        else:
            env.pop("KAFKA_BOOTSTRAP_SERVERS")
            args += ["--kafka-port", str(taken)]
            expected, option = f"port {taken} (Kafka)", "--kafka-port"
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "dev", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - began
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"error: {expected} is already in use: stop what listens there or choose another port with {option}\n"
    )
    assert done.stdout == ""
    assert took < 15, took  # an interpreter's start-up and imports, no wait
    assert not (tmp_path / "var").exists()  # nothing was started
