"""The broker process: one single-node Apache Kafka 4.x broker (KRaft "combined" mode:
one JVM is both broker and controller, no ZooKeeper) in a child process.

`LocalKafka.start()` resolves the jars (`jars.py`), makes the TLS material when asked
(`tls.py`), writes the configuration and formats the storage the first time only
(`config.py`; a restart on the same data dir keeps topics and records), runs
`java ... kafka.Kafka server.properties` in its own process group (`spawn_jvm`, the one
place the JVM is started) and returns once the broker answers a metadata request
(`ready.py`). Files in the data dir: `logs/` (Kafka's data), `server.log` (the broker's
own log), `kafka.out` (the JVM's stdout and stderr), the two generated config files and,
with `security="sasl_ssl"`, `tls/`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from streams import childproc
from streams.envreader import Secret
from streams.kafkaconn import KafkaSecurity
from streams.localkafka.config import check_data_dir_free, format_storage, server_settings, write_configs
from streams.localkafka.errors import KafkaLaunchError
from streams.localkafka.exitlog import exit_message, file_size
from streams.localkafka.jars import check_version, default_kafka_version, resolve_kafka
from streams.localkafka.java import broker_command, check_java_version, find_java
from streams.localkafka.ports import free_ports, port_free
from streams.localkafka.ready import run_sync, wait_ready
from streams.localkafka.tls import SASL_USER, prepare_sasl_ssl, sasl_password, sasl_ssl_settings, scram_users

SECURITY_MODES = ("plaintext", "sasl_ssl")


def spawn_jvm(cmd: list[str], cwd: Path, log: BinaryIO) -> subprocess.Popen:
    """Start the broker's JVM: output to `log`, in its own process group (a terminal's
    Ctrl-C reaches us, and we stop it cleanly)."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=childproc.dies_with_parent(),  # and the JVM never outlives us, even SIGKILLed
    )


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
        self.version = check_version(version) if version else default_kafka_version()
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
            sasl_password=Secret(sasl_password(self.tls_dir) if password is None else password),
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
        java = find_java()
        check_java_version(java)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KafkaLaunchError(
                f"cannot create the Kafka data dir {self.data_dir}: {exc.strerror}; choose another with --data-dir"
            ) from exc
        check_data_dir_free(self.data_dir, self.log_dir)
        formatted = (self.log_dir / "meta.properties").exists()
        if self.security == "sasl_ssl":
            prepare_sasl_ssl(self.tls_dir, self.data_dir, formatted)
        props, log4j = self._write_configs()
        classpath = [java, "-cp", str(libs / "*"), f"-Dlog4j2.configurationFile={log4j}"]
        if not formatted:
            users = scram_users(self.tls_dir) if self.security == "sasl_ssl" else []
            format_storage(classpath, props, self.data_dir, self.log_dir, users)
        cmd = broker_command(java, self.heap, self.data_dir, classpath[1:], props)
        self._spawn(cmd)
        try:
            run_sync(wait_ready(self.bootstrap_servers, timeout, self._check_alive, self.client_security()))
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
            if not port_free(self.port):
                raise KafkaLaunchError(
                    f"port {self.port} is already in use: stop what listens there or choose another with --port"
                )
        if self.controller_port and not port_free(self.controller_port):
            if self._controller_port_given:
                raise KafkaLaunchError(
                    f"controller port {self.controller_port} is already in use: "
                    "stop what listens there or choose another controller_port"
                )
            self.controller_port = None  # ours to choose: take another one
        wanted = [p for p in (self.port, self.controller_port, self.internal_port) if p]
        picked = iter(p for p in free_ports(4) if p not in wanted)
        if not self.port:
            self.port = next(picked)
        if not self.controller_port:
            self.controller_port = next(picked)
        if self.security == "sasl_ssl" and not (self.internal_port and port_free(self.internal_port)):
            self.internal_port = next(picked)
        if self.controller_port == self.port:
            raise KafkaLaunchError(f"the controller port must differ from the broker port {self.port}")

    def _write_configs(self) -> tuple[Path, Path]:
        assert self.controller_port is not None, "_choose_ports() first"
        listeners: dict[str, str] = {}
        if self.security == "sasl_ssl":
            listeners = self._sasl_ssl_settings()
        settings = server_settings(self.port, self.controller_port, self.log_dir, listeners)
        return write_configs(self.data_dir, settings, self.server_log)

    def _sasl_ssl_settings(self) -> dict[str, str]:
        """The listeners of security="sasl_ssl" (a subclass may add to them: an authorizer,
        more logins; tests/test_e2e_acls.py)."""
        assert self.controller_port is not None and self.internal_port is not None, "_choose_ports() first"
        return sasl_ssl_settings(self.tls_dir, self.port, self.controller_port, self.internal_port)

    def _sasl_password(self) -> str:
        return sasl_password(self.tls_dir)

    def _spawn(self, cmd: list[str]) -> None:
        self._log_handle = open(self.log_file, "ab")
        self._log_handle.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting Kafka {self.version}: {shlex.join(cmd)}\n".encode()
        )
        self._log_handle.flush()
        self._log_offsets = (self._log_handle.tell(), file_size(self.server_log))  # what this start writes
        self.returncode = None
        try:
            self._proc = spawn_jvm(cmd, self.data_dir, self._log_handle)
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
        return exit_message(
            code, (self.log_file, self._log_offsets[0]), (self.server_log, self._log_offsets[1]), self._hints()
        )

    def _hints(self) -> dict[str, str]:
        """What to do, by what the broker's last error line says."""
        return {
            "": f"full log in {self.server_log} and {self.log_file}",
            "Address already in use": (
                f"port {self.port} or {self.controller_port} was taken meanwhile: choose another with --port"
            ),
            "Failed to acquire lock": (
                f"data dir {self.data_dir} is in use by another broker: stop it or choose another with --data-dir"
            ),
        }

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
