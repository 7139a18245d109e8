"""A real single-node Apache Kafka broker for development and tests, without Docker.

`cs-relay kafka`, `cs-relay dev` and the test suite's session fixture run Apache Kafka
4.x in KRaft "combined" mode (one JVM is both broker and controller, no ZooKeeper):

1. `resolve_kafka()` fetches the broker's jars from Maven Central once per Kafka
   version, with `mvn dependency:copy-dependencies` on `tools/kafka/pom.xml`, into
   `<cache>/<version>/libs` (cache: `$CS_RELAY_KAFKA_CACHE` or
   `~/.cache/cs-relay/kafka`). The jars land in a temporary folder that is renamed into
   place only after Maven succeeded, so an interrupted download is never used. The
   folder carries a marker with a digest of the pom: editing the pom fetches again.
2. `LocalKafka.start()` writes `server.properties` and `log4j2.properties` into its
   data dir, formats the storage (`kafka.tools.StorageTool format --standalone`) the
   first time only -- a restart on the same data dir keeps topics and records -- runs
   `java ... kafka.Kafka server.properties` in its own process group, and returns once
   the broker answers a metadata request (not merely once the port is open).

Files in the data dir: `logs/` (Kafka's data), `server.log` (the broker's own log),
`kafka.out` (the JVM's stdout and stderr), and the two generated config files; with
`security="sasl_ssl"` (`cs-relay kafka --security sasl_ssl`) also `tls/`: a certificate
authority (`ca.pem`, what clients trust), the broker's certificate for 127.0.0.1 and
localhost with its key (`broker-keystore.pem`, a PEM keystore Kafka 4 reads directly) and
the SASL user's password (`sasl-password`). That broker's clients listen on SASL_SSL
(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; the SCRAM credentials are written when the storage
is formatted, `--add-scram`); the controller and the broker's own traffic stay on
PLAINTEXT loopback listeners.

Environment: `CS_RELAY_KAFKA_VERSION` (default 4.0.2), `CS_RELAY_KAFKA_CACHE`,
`CS_RELAY_KAFKA_POM`, `JAVA_HOME` (else `java` on PATH; Java 17 or newer).

The broker is tuned to start fast and stay small (1 partition per auto-created topic,
4 partitions for the internal offsets/transaction topics, 16 MB segments, short broker
session so a restart re-registers in ~3 s instead of ~10 s). It listens on 127.0.0.1
only and is meant for development and tests, never for production data.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from devtools import childproc
from streams.envreader import Secret
from streams.kafkaconn import KafkaConnectError, KafkaSecurity, start_client

DEFAULT_KAFKA_VERSION = "4.0.2"
MIN_JAVA = 17
MVN_TIMEOUT = 900.0  # a first fetch is ~60 MB of jars

_HINT_EXISTING = "set KAFKA_BOOTSTRAP_SERVERS to use an existing broker"
_MARKER = ".complete"
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+_-]*$")


class KafkaLaunchError(Exception):
    """The local broker could not be fetched, started or reached; the message says what to do."""


# --------------------------------------------------------------------------- resolving


def kafka_cache_dir() -> Path:
    """Where Kafka's jars are kept: `$CS_RELAY_KAFKA_CACHE` or `~/.cache/cs-relay/kafka`."""
    configured = os.environ.get("CS_RELAY_KAFKA_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.home() / ".cache" / "cs-relay" / "kafka"


def default_kafka_version() -> str:
    return _check_version(os.environ.get("CS_RELAY_KAFKA_VERSION", "").strip() or DEFAULT_KAFKA_VERSION)


def kafka_pom() -> Path:
    """The Maven file that lists the broker's jars: `$CS_RELAY_KAFKA_POM` or the checkout's own."""
    configured = os.environ.get("CS_RELAY_KAFKA_POM", "").strip()
    pom = (
        Path(configured).expanduser() if configured else Path(__file__).resolve().parent.parent / "tools/kafka/pom.xml"
    )
    if not pom.is_file():
        raise KafkaLaunchError(
            f"Kafka's Maven file {pom} is missing: run from a cs-relay checkout (pip install -e .), "
            f"set CS_RELAY_KAFKA_POM to tools/kafka/pom.xml, or {_HINT_EXISTING}"
        )
    return pom


def resolve_kafka(version: str | None = None, *, quiet: bool = True) -> Path:
    """The folder holding every jar of Kafka `version`, fetched with Maven the first time.

    Safe against interruption (a temporary folder is renamed into place only when Maven
    succeeded) and against concurrent callers (a lock file serialises the fetch).
    """
    version = _check_version(version) if version else default_kafka_version()
    pom = kafka_pom()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    home = kafka_cache_dir() / version
    libs = home / "libs"
    if _complete(libs, digest):
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaLaunchError(
            "the local Kafka broker needs `mvn` (Apache Maven) on PATH to fetch Kafka from Maven Central; "
            f"install it or {_HINT_EXISTING}"
        )
    _java()  # Maven needs it too, and so will the broker: say so before a long download
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KafkaLaunchError(
            f"cannot create the Kafka cache {home}: {exc.strerror}; set CS_RELAY_KAFKA_CACHE to a writable folder"
        ) from exc
    with _file_lock(home / ".lock"):
        if _complete(libs, digest):  # another process fetched it while we waited
            return libs
        for stale in [*home.glob(".libs-*"), *home.glob(".old-*")]:  # left by an interrupted fetch
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".libs-", dir=home))
        try:
            if not quiet:
                print(
                    f"fetching Apache Kafka {version} from Maven Central into {libs} (first run only) ...",
                    file=sys.stderr,
                    flush=True,
                )
            started = time.monotonic()
            _run_maven(mvn, pom, version, tmp)
            if not list(tmp.glob("kafka_*.jar")):
                raise KafkaLaunchError(f"mvn finished but fetched no Kafka broker jar for {version}: check {pom}")
            jars = sorted(p.name for p in tmp.glob("*.jar"))
            (tmp / _MARKER).write_text(f"pom-sha256={digest}\nversion={version}\n" + "\n".join(jars) + "\n")
            old = None
            if libs.exists():  # an incomplete folder, or one from an older pom
                old = home / f".old-{os.getpid()}"
                libs.rename(old)
            tmp.rename(libs)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            if not quiet:
                print(f"fetched {len(jars)} jars in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return libs


def _check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise KafkaLaunchError(
            f"{version!r} is not a Kafka version such as {DEFAULT_KAFKA_VERSION}: fix CS_RELAY_KAFKA_VERSION"
        )
    return version


def _complete(libs: Path, digest: str) -> bool:
    try:
        return (libs / _MARKER).read_text().startswith(f"pom-sha256={digest}\n")
    except OSError:
        return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_maven(mvn: str, pom: Path, version: str, out: Path) -> None:
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out}",
    ]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=MVN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaLaunchError(
            f"mvn did not finish fetching Kafka {version} within {MVN_TIMEOUT / 60:.0f} minutes: "
            "check your network or Maven proxy (~/.m2/settings.xml)"
        ) from exc
    if proc.returncode != 0:
        raise KafkaLaunchError(
            f"mvn could not fetch Kafka {version} from Maven Central (exit {proc.returncode}): "
            f"{_maven_summary(proc.stdout)}; "
            "check the version (CS_RELAY_KAFKA_VERSION), your network or ~/.m2/settings.xml"
        )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAVEN_NOISE = (
    "To see the full stack trace",
    "Re-run Maven",
    "For more information about",
    "[Help ",
    "cwiki.apache.org",
)


def _maven_summary(output: str) -> str:
    """The lines of Maven's output that say what went wrong, without its boilerplate."""
    lines = [_ANSI.sub("", line).strip() for line in output.splitlines()]
    errors = []
    for line in lines:
        if line.startswith("[ERROR]"):
            line = re.sub(r"\s*->\s*\[Help \d+\]\s*$", "", line[len("[ERROR]") :].strip())
            if line and not any(noise in line for noise in _MAVEN_NOISE):
                errors.append(line)
    picked = errors[:3] or [line for line in lines if line][-3:]
    summary = " | ".join(picked) or "no output"
    return summary if len(summary) <= 700 else summary[:700] + " ..."


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise KafkaLaunchError(
            f"the local Kafka broker needs `java` ({MIN_JAVA} or newer) on PATH or in JAVA_HOME; "
            f"install a JDK (e.g. openjdk-17-jre-headless) or {_HINT_EXISTING}"
        )
    return java


_java_checked: dict[str, int | None] = {}


def _check_java_version(java: str) -> None:
    if java not in _java_checked:
        major = None
        try:
            out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
            found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
            if found:
                major = int(found.group(2) or 0) if found.group(1) == "1" else int(found.group(1))
        except (OSError, subprocess.SubprocessError):
            pass
        _java_checked[java] = major
    major = _java_checked[java]
    if major is not None and major < MIN_JAVA:
        raise KafkaLaunchError(
            f"Kafka 4 needs Java {MIN_JAVA} or newer but {java} is Java {major}: "
            f"install a newer JDK and put it first on PATH (or set JAVA_HOME), or {_HINT_EXISTING}"
        )


# --------------------------------------------------------------------------- readiness


async def wait_until_ready(bootstrap: str, timeout: float, security: KafkaSecurity | None = None) -> None:
    """Return once the broker(s) at `bootstrap` answer a metadata request; raise KafkaLaunchError after `timeout` s.

    Usable on its own, for a broker started elsewhere (`KAFKA_BOOTSTRAP_SERVERS`), with
    `security` (`Settings.kafka_security`) when that broker needs TLS or SASL.
    """
    await _wait_ready(bootstrap, timeout, None, security)


async def _wait_ready(
    bootstrap: str, timeout: float, check_alive: Callable[[], None] | None, security: KafkaSecurity | None = None
) -> None:
    deadline = time.monotonic() + timeout
    hosts = _hosts(bootstrap)
    last = "nothing listens there yet"
    while True:
        if check_alive is not None:
            check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaLaunchError(
                f"Kafka at {bootstrap} did not answer a metadata request within {timeout:g}s ({last}): "
                "check that a broker runs there and its advertised listeners are reachable"
            )
        # Connect first with a plain socket: cheaper, and it keeps aiokafka from logging
        # an error for every refused connection while the JVM starts.
        if not await _any_port_open(hosts, min(1.0, remaining)):
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            continue
        try:
            await asyncio.wait_for(
                _metadata_answered(bootstrap, min(5.0, max(remaining, 0.5)), security), timeout=max(remaining, 0.5) + 1
            )
            return
        except asyncio.CancelledError:
            raise
        except KafkaConnectError as exc:  # TLS or SASL refused: waiting will not help
            raise KafkaLaunchError(f"Kafka at {bootstrap}: {exc}") from None
        except Exception as exc:  # not ready yet: the broker accepts before it serves
            last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        await asyncio.sleep(0.2)


async def _metadata_answered(bootstrap: str, request_timeout: float, security: KafkaSecurity | None) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    security = security or KafkaSecurity()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="cs-relay-ready-check",
        request_timeout_ms=int(request_timeout * 1000),
        **security.client_options(),
    )
    try:
        await start_client(admin, security, bootstrap)
        await admin.list_topics()
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for item in bootstrap.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "9092"
        try:
            hosts.append((host.strip("[]"), int(port)))
        except ValueError:
            raise KafkaLaunchError(f"bad Kafka address {item!r} in {bootstrap!r}: use host:port[,host:port]") from None
    if not hosts:
        raise KafkaLaunchError(f"no Kafka address in {bootstrap!r}: use host:port[,host:port]")
    return hosts


async def _any_port_open(hosts: list[tuple[str, int]], timeout: float) -> bool:
    for host, port in hosts:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError):
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True
    return False


def _run_sync(coro) -> None:
    """Run `coro` to completion from synchronous code, even if this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-ready") as pool:
        pool.submit(asyncio.run, coro).result()


# --------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM does: TIME_WAIT is no conflict
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------- the broker


_running: set[LocalKafka] = set()
_temporary_dirs: set[Path] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Never leave a broker (or a temporary data dir) behind when the interpreter exits normally."""
    for kafka in list(_running):
        with contextlib.suppress(Exception):
            kafka.stop(timeout=10)
    for path in list(_temporary_dirs):
        shutil.rmtree(path, ignore_errors=True)


class LocalKafka:
    """One single-node Kafka broker (KRaft, broker+controller) in a child JVM.

        with LocalKafka(port=0, data_dir=tmp) as kafka:
            use(kafka.bootstrap_servers)

    `port=0` picks a free port at the first start (kept across restarts). Without
    `data_dir` a temporary folder is used and removed when the context manager exits.

    `security="sasl_ssl"`: clients connect over TLS with a SASL login (`client_security()`,
    `client_env()`). A certificate authority and a broker certificate for 127.0.0.1 and
    localhost are generated into `<data dir>/tls`, and one user, `SASL_USER`, with a
    random password kept in `<data dir>/tls/sasl-password`, may log in with PLAIN,
    SCRAM-SHA-256 or SCRAM-SHA-512 (the SCRAM credentials are written at format time).
    The controller and the broker's own traffic stay on PLAINTEXT loopback listeners.
    """

    def __init__(
        self,
        port: int = 9092,
        data_dir: Path | None = None,
        *,
        controller_port: int | None = None,
        heap: str = "512m",
        version: str | None = None,
        log_file: Path | None = None,
        security: str = "plaintext",
    ) -> None:
        if security not in SECURITY_MODES:
            raise KafkaLaunchError(f"security {security!r} is not one of {', '.join(SECURITY_MODES)}")
        self.security = security
        self.internal_port: int | None = None  # sasl_ssl: the broker's own PLAINTEXT listener (loopback)
        self.version = _check_version(version) if version else default_kafka_version()
        self.port = int(port)
        self.controller_port = controller_port
        self._port_given = self.port != 0
        self._controller_port_given = controller_port is not None
        if not re.fullmatch(r"\d+[kKmMgG]?", heap):
            raise KafkaLaunchError(f"heap {heap!r} is not a JVM size such as 512m or 1g")
        self.heap = heap
        self._owned_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="cs-relay-kafka-"))
            if data_dir is None
            else Path(data_dir).expanduser().absolute()
        )
        if self._owned_dir:
            _temporary_dirs.add(self.data_dir)
        self.log_file = Path(log_file).expanduser().absolute() if log_file else self.data_dir / "kafka.out"
        self.server_log = self.data_dir / "server.log"
        self.started_in: float | None = None
        self.returncode: int | None = None
        self._proc: subprocess.Popen | None = None
        self._log_handle: BinaryIO | None = None
        self._log_offsets: tuple[int, int] = (0, 0)

    # -- public

    @property
    def bootstrap_servers(self) -> str:
        if not self.port:
            raise RuntimeError("the port is chosen by start(): call it first")
        return f"127.0.0.1:{self.port}"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    def client_security(self, mechanism: str = "SCRAM-SHA-512", *, password: str | None = None) -> KafkaSecurity:
        """What a client needs to connect (PLAINTEXT unless started with security="sasl_ssl");
        `password` overrides the real one (to test a refused login)."""
        if self.security == "plaintext":
            return KafkaSecurity()
        return KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username=SASL_USER,
            sasl_password=Secret(self._sasl_password() if password is None else password),
            ssl_cafile=str(self.tls_dir / "ca.pem"),
        )

    def client_env(self, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """The KAFKA_* variables a cs-relay command needs for this broker (password included)."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, **self.client_security(mechanism).env()}

    @property
    def log_dir(self) -> Path:
        """Kafka's data (`log.dirs`)."""
        return self.data_dir / "logs"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0, *, quiet: bool = False) -> LocalKafka:
        """Fetch Kafka if needed, format the data dir the first time, start, wait until it serves.

        `timeout` bounds the wait for the started broker (not a first download).
        With `quiet=False` a first download says so on stderr.
        """
        if self.running:
            return self
        began = time.monotonic()
        self._choose_ports()
        libs = resolve_kafka(self.version, quiet=quiet)
        java = _java()
        _check_java_version(java)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KafkaLaunchError(
                f"cannot create the Kafka data dir {self.data_dir}: {exc.strerror}; choose another with --data-dir"
            ) from exc
        self._check_data_dir_free()
        formatted = (self.log_dir / "meta.properties").exists()
        if self.security == "sasl_ssl":
            self._prepare_sasl_ssl(formatted)
        props, log4j = self._write_configs()
        classpath = [java, "-cp", str(libs / "*"), f"-Dlog4j2.configurationFile={log4j}"]
        if not formatted:
            self._format(classpath, props)
        cmd = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{_smaller(self.heap, '64m')}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            # Kafka logs through its own shutdown hook; log4j's would close the log first
            # ("Unable to register Log4j shutdown hook") and lose the shutdown's lines.
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dkafka.logs.dir={self.data_dir}",
            *classpath[1:],
            "kafka.Kafka",
            str(props),
        ]
        self._spawn(cmd)
        try:
            _run_sync(_wait_ready(self.bootstrap_servers, timeout, self._check_alive, self.client_security()))
        except BaseException:
            self.kill()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop cleanly (SIGTERM, Kafka's controlled shutdown); SIGKILL after `timeout` s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the broker at once, as a crash would (no controlled shutdown)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGKILL)
            proc.wait()
        self._reap()

    def restart(self, timeout: float = 60.0) -> LocalKafka:
        """Stop cleanly and start again on the same ports and data (topics and records survive)."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> LocalKafka:
        try:
            return self.start()
        except BaseException:
            self._remove_owned_dir()
            raise

    def __exit__(self, *exc_info) -> None:
        try:
            self.stop()
        finally:
            self._remove_owned_dir()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<LocalKafka {self.version} 127.0.0.1:{self.port} {state} data={self.data_dir}>"

    # -- internals

    def _choose_ports(self) -> None:
        if self._port_given or self.port:  # given, or chosen by an earlier start
            if not _port_free(self.port):
                raise KafkaLaunchError(
                    f"port {self.port} is already in use: stop what listens there or choose another with --port"
                )
        if self.controller_port and not _port_free(self.controller_port):
            if self._controller_port_given:
                raise KafkaLaunchError(
                    f"controller port {self.controller_port} is already in use: "
                    "stop what listens there or choose another controller_port"
                )
            self.controller_port = None  # ours to choose: take another one
        wanted = [p for p in (self.port, self.controller_port, self.internal_port) if p]
        picked = iter(p for p in _free_ports(4) if p not in wanted)
        if not self.port:
            self.port = next(picked)
        if not self.controller_port:
            self.controller_port = next(picked)
        if self.security == "sasl_ssl" and not (self.internal_port and _port_free(self.internal_port)):
            self.internal_port = next(picked)
        if self.controller_port == self.port:
            raise KafkaLaunchError(f"the controller port must differ from the broker port {self.port}")

    def _check_data_dir_free(self) -> None:
        lock = self.log_dir / ".lock"
        if not lock.exists():
            return
        with open(lock, "a") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the JVM locks it the same (POSIX) way
            except OSError:
                raise KafkaLaunchError(
                    f"data dir {self.data_dir} is in use by another running Kafka broker: "
                    "stop it or choose another with --data-dir"
                ) from None
            fcntl.lockf(handle, fcntl.LOCK_UN)

    def _write_configs(self) -> tuple[Path, Path]:
        port, cport = self.port, self.controller_port
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            **self._sasl_ssl_settings(),
            # one broker: every replication factor and ISR is 1
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            # fast and small: no rebalance delay, few internal partitions, small files
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",  # lets tests use short consumer session timeouts
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "log.segment.bytes": str(16 * 1024 * 1024),
            "offsets.topic.segment.bytes": str(16 * 1024 * 1024),
            "transaction.state.log.segment.bytes": str(16 * 1024 * 1024),
            "log.index.size.max.bytes": str(1024 * 1024),
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
            # After a restart the controller refuses the broker's new registration until
            # the old one's session expires (default 9 s): keep that short.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
        }
        props = self.data_dir / "server.properties"
        _write_text(
            props, "# written by streams/kafka_local.py on every start; edits are overwritten\n" + _properties(settings)
        )
        log4j = self.data_dir / "log4j2.properties"
        log4j_settings = {
            "status": "warn",
            "name": "cs-relay-local-kafka",
            "appender.file.type": "RollingFile",
            "appender.file.name": "FILE",
            "appender.file.fileName": str(self.server_log),
            "appender.file.filePattern": f"{self.server_log}.%i",
            "appender.file.layout.type": "PatternLayout",
            "appender.file.layout.pattern": "[%d] %p %m (%c)%n",
            "appender.file.policies.type": "Policies",
            "appender.file.policies.size.type": "SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size": "10MB",
            "appender.file.strategy.type": "DefaultRolloverStrategy",
            "appender.file.strategy.max": "3",
            "rootLogger.level": "INFO",
            "rootLogger.appenderRef.file.ref": "FILE",
            "logger.request.name": "kafka.request.logger",
            "logger.request.level": "WARN",
        }
        _write_text(log4j, "# broker log to a file only; no console output\n" + _properties(log4j_settings))
        return props, log4j

    def _sasl_ssl_settings(self) -> dict[str, str]:
        """Listeners for security="sasl_ssl": clients on SASL_SSL, the broker's own traffic
        on a PLAINTEXT loopback listener, the controller as before."""
        if self.security != "sasl_ssl":
            return {}
        port, cport, iport = self.port, self.controller_port, self.internal_port
        plain_users = (
            f'username="{SASL_USER}" password="{self._sasl_password()}" user_{SASL_USER}="{self._sasl_password()}";'
        )
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},BROKER://127.0.0.1:{iport},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},BROKER://127.0.0.1:{iport}",
            "inter.broker.listener.name": "BROKER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users}"
            ),
            **{
                f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
                for m in SASL_MECHANISMS[1:]
            },
            # Kafka reads PEM directly: the key (PKCS#8, unencrypted) and its chain in one file.
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(self.tls_dir / "broker-keystore.pem"),
            "listener.name.sasl_ssl.ssl.client.auth": "none",
        }

    def _sasl_password(self) -> str:
        return (self.tls_dir / "sasl-password").read_text().strip()

    def _prepare_sasl_ssl(self, formatted: bool) -> None:
        """The certificates and the password, made once per data dir (kept across restarts)."""
        password_file = self.tls_dir / "sasl-password"
        if formatted and not password_file.exists():
            raise KafkaLaunchError(
                f"data dir {self.data_dir} was formatted without SASL users (a plaintext broker's): "
                "choose another --data-dir for --security sasl_ssl"
            )
        if not (self.tls_dir / "broker-keystore.pem").exists():
            generate_tls(self.tls_dir, server=True)
        if not password_file.exists():
            self.tls_dir.mkdir(parents=True, exist_ok=True)
            password_file.touch(mode=0o600)
            password_file.write_text(secrets.token_hex(16) + "\n")

    def _format(self, classpath: list[str], props: Path) -> None:
        cmd = [*classpath, "kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(), "-c", str(props)]
        if self.security == "sasl_ssl":
            for mechanism in SASL_MECHANISMS[1:]:
                cmd += ["--add-scram", f"{mechanism}=[name={SASL_USER},password={self._sasl_password()}]"]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=120,
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaLaunchError(
                f"formatting Kafka storage in {self.log_dir} took over 2 minutes: see {self.server_log}"
            ) from exc
        if proc.returncode != 0:
            lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
            raise KafkaLaunchError(
                f"formatting Kafka storage in {self.log_dir} failed (exit {proc.returncode}): "
                f"{' | '.join(lines[-3:]) or 'no output'}; "
                "remove that folder or choose another with --data-dir"
            )

    def _spawn(self, cmd: list[str]) -> None:
        self._log_handle = open(self.log_file, "ab")
        self._log_handle.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting Kafka {self.version}: {shlex.join(cmd)}\n".encode()
        )
        self._log_handle.flush()
        self._log_offsets = (self._log_handle.tell(), _size(self.server_log))  # what this start writes
        self.returncode = None
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: a terminal's Ctrl-C reaches us, and we stop it cleanly
                preexec_fn=childproc.dies_with_parent(),  # and the JVM never outlives us, even SIGKILLed
            )
        except OSError as exc:
            self._log_handle.close()
            raise KafkaLaunchError(f"cannot run {cmd[0]}: {exc.strerror}; check your Java installation") from exc
        _running.add(self)

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        code = proc.returncode
        self._reap()
        raise KafkaLaunchError(self._exit_message(code))

    def _exit_message(self, code: int) -> str:
        out = _tail(self.log_file, self._log_offsets[0], 12)
        log = _tail(self.server_log, self._log_offsets[1], 200)
        problems = [line for line in log + out if re.search(r"\b(ERROR|FATAL)\b|Exception|Error:", line)]
        key = problems[-1] if problems else (out[-1] if out else "no output")
        hint = f"full log in {self.server_log} and {self.log_file}"
        if "Address already in use" in key:
            hint = f"port {self.port} or {self.controller_port} was taken meanwhile: choose another with --port"
        elif "Failed to acquire lock" in key:
            hint = f"data dir {self.data_dir} is in use by another broker: stop it or choose another with --data-dir"
        shown = [line for line in log[-12:] if line.strip()] or out
        return f"Kafka exited with code {code} while starting: {key[:400]}; {hint}\n" + "\n".join(
            "    " + line[:300] for line in shown[-12:]
        )

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)  # type: ignore[union-attr]

    def _reap(self) -> None:
        if self._proc is not None:
            self.returncode = self._proc.poll()
        self._proc = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        _running.discard(self)

    def _remove_owned_dir(self) -> None:
        if self._owned_dir and not self.running:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            _temporary_dirs.discard(self.data_dir)


SECURITY_MODES = ("plaintext", "sasl_ssl")
SASL_USER = "cs-relay"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def generate_tls(folder: Path, *, server: bool) -> None:
    """A new certificate authority in `folder` (`ca.pem`, `ca.key`) and, with `server`, a
    certificate it signs for 127.0.0.1 and localhost (`broker-keystore.pem`: the
    unencrypted PKCS#8 key and the certificate chain, as Kafka's PEM keystore reads them)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise KafkaLaunchError("--security sasl_ssl needs `openssl` on PATH to make the broker's certificates")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        proc = subprocess.run(
            [openssl, *args], cwd=folder, capture_output=True, text=True, errors="replace", timeout=60
        )
        if proc.returncode != 0:
            raise KafkaLaunchError(
                f"openssl {args[0]} failed making certificates in {folder}: {proc.stderr.strip()[-300:]}"
            )

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3650",
        "-subj",
        "/CN=cs-relay local Kafka CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    if not server:
        return
    (folder / "broker.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    run(
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "broker.pem",
        "-days",
        "825",
        "-extfile",
        "broker.ext",
    )
    keystore = (
        (folder / "broker.key").read_text() + (folder / "broker.pem").read_text() + (folder / "ca.pem").read_text()
    )
    _write_text(folder / "broker-keystore.pem", keystore)


def _cluster_id() -> str:
    while True:  # 22 characters of base64url, as `kafka-storage random-uuid`; a leading '-' would read as an option
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _properties(settings: dict[str, str]) -> str:
    def escape(value: str) -> str:  # java.util.Properties reads ISO-8859-1 with \\ and \\uXXXX escapes
        value = value.replace("\\", "\\\\")
        return "".join(ch if 32 <= ord(ch) < 127 else f"\\u{ord(ch):04x}" for ch in value)

    return "".join(f"{key}={escape(value)}\n" for key, value in settings.items())


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="ascii")
    tmp.replace(path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, offset: int, lines: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(offset if offset <= size else 0, size - 256 * 1024)
            handle.seek(start)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


def _smaller(heap: str, cap: str) -> str:
    def size(value: str) -> int:
        number, unit = int(value.rstrip("kKmMgG")), value[-1].lower()
        return number * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(unit, 1)

    return heap if size(heap) < size(cap) else cap


# --------------------------------------------------------------------------- cs-relay kafka


def _client_settings_text(kafka: LocalKafka) -> str:
    """The variables that connect cs-relay to a sasl_ssl broker, ready to paste into a shell."""
    env = kafka.client_env("SCRAM-SHA-512")
    lines = [
        "clients connect with SASL_SSL; this is a local development broker, so its password is shown here",
        f"(it is kept in {kafka.tls_dir / 'sasl-password'}; KAFKA_SASL_MECHANISM may also be PLAIN or SCRAM-SHA-256):",
        *(f"  export {name}={shlex.quote(value)}" for name, value in env.items()),
    ]
    return "\n".join(lines)


def run_kafka(port: int, data_dir: Path | None, security: str = "plaintext") -> int:
    """`cs-relay kafka`: start a broker, say where it is, run until SIGINT/SIGTERM, stop it cleanly."""
    default_dir = Path("var/kafka") if security == "plaintext" else Path(f"var/kafka-{security.replace('_', '-')}")
    kafka = LocalKafka(port=port, data_dir=Path(data_dir) if data_dir is not None else default_dir, security=security)

    def interrupt(signum, frame):  # SIGTERM while starting: unwind like Ctrl-C, so start() kills the JVM
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        kafka.start(quiet=False)
    except KafkaLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        print(
            f"Kafka {kafka.version} ready at {kafka.bootstrap_servers} "
            f"(started in {kafka.started_in:.1f}s, data in {kafka.data_dir})",
            flush=True,
        )
        if kafka.security == "sasl_ssl":
            print(_client_settings_text(kafka), flush=True)
        while not stop.wait(0.5):
            if not kafka.running:
                kafka.stop()  # reaps it
                print(
                    f"error: Kafka exited unexpectedly (code {kafka.returncode}): see {kafka.server_log}",
                    file=sys.stderr,
                )
                code = 1
                break
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)  # a second Ctrl-C while stopping interrupts the wait ...
        try:
            kafka.stop()
        except KeyboardInterrupt:
            kafka.kill()  # ... and kills the broker rather than leaving it behind
            raise
    if code == 0:
        print("Kafka stopped", flush=True)
    return code
