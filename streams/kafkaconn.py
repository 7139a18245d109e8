"""How every Kafka client of cs-relay connects: TLS and SASL, from one set of variables.

`KafkaSecurity.from_env(read)` reads and checks `KAFKA_SECURITY_PROTOCOL`,
`KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD` (a `Secret`),
`KAFKA_SSL_CAFILE`, `KAFKA_SSL_CERTFILE` / `KAFKA_SSL_KEYFILE` (mutual TLS) and
`KAFKA_SSL_CHECK_HOSTNAME`. `Settings.kafka_security` holds the result, and every client
takes its options from it: `client_options()` for aiokafka's producers, consumers and
admin clients, `faust_credentials()` for the worker (Faust's `broker_credentials`).

`start_client` starts an aiokafka client and, when it cannot connect, says why in one
line naming the setting to fix (`KafkaConnectError`): aiokafka itself only logs the
cause and raises "Unable to bootstrap", so the connection is tried once more directly
to find the TLS or SASL error behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.envreader import EnvReader, Secret, SettingsError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

PROTOCOL = "KAFKA_SECURITY_PROTOCOL"
MECHANISM = "KAFKA_SASL_MECHANISM"
USERNAME = "KAFKA_SASL_USERNAME"
PASSWORD = "KAFKA_SASL_PASSWORD"
CAFILE = "KAFKA_SSL_CAFILE"
CERTFILE = "KAFKA_SSL_CERTFILE"
KEYFILE = "KAFKA_SSL_KEYFILE"
CHECK_HOSTNAME = "KAFKA_SSL_CHECK_HOSTNAME"
VARIABLES = (PROTOCOL, MECHANISM, USERNAME, PASSWORD, CAFILE, CERTFILE, KEYFILE, CHECK_HOSTNAME)


class KafkaConnectError(Exception):
    """A Kafka client could not connect; the message is one line naming what to fix."""


@dataclass(frozen=True)
class KafkaSecurity:
    """The security settings shared by every Kafka client (PLAINTEXT by default)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: Secret = field(default_factory=lambda: Secret(""))
    ssl_cafile: str = ""  # empty: the system's certificate authorities
    ssl_certfile: str = ""  # mutual TLS: the client certificate and its key, both or neither
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True

    @classmethod
    def from_env(cls, read: EnvReader) -> KafkaSecurity:
        """Read and check the variables; raise `SettingsError` naming the bad one."""
        protocol = read.text(PROTOCOL, "PLAINTEXT", check=_one_of(PROTOCOLS)).upper()
        mechanism = read.text(MECHANISM, "PLAIN", check=_one_of(MECHANISMS)).upper()
        username = read.text(USERNAME, "")
        password = Secret(read.text(PASSWORD, ""))
        files = {name: read.text(name, "") for name in (CAFILE, CERTFILE, KEYFILE)}
        security = cls(
            protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_cafile=files[CAFILE],
            ssl_certfile=files[CERTFILE],
            ssl_keyfile=files[KEYFILE],
            ssl_check_hostname=read.flag(CHECK_HOSTNAME, True),
        )
        try:
            security._check(
                set_sasl=[n for n, v in ((USERNAME, username), (PASSWORD, password)) if v],
                set_files=[n for n, v in files.items() if v],
                mechanism_set=read.text(MECHANISM, "") != "",
            )
        except SettingsError as exc:  # raised, or recorded by `cs-relay config` (then PLAINTEXT)
            return read.fail(str(exc), cls())
        return security

    def _check(self, *, set_sasl: list[str], set_files: list[str], mechanism_set: bool) -> None:
        if self.uses_sasl:
            missing = [name for name in (USERNAME, PASSWORD) if name not in set_sasl]
            if missing:
                raise SettingsError(f"{' and '.join(missing)}: required with {PROTOCOL}={self.protocol}")
        elif set_sasl or mechanism_set:
            named = set_sasl or [MECHANISM]
            raise SettingsError(
                f"{', '.join(named)}: set, but {PROTOCOL}={self.protocol} sends no SASL login; "
                f"use SASL_SSL (or SASL_PLAINTEXT), or unset {' and '.join(named)}"
            )
        if not self.uses_ssl and set_files:
            raise SettingsError(
                f"{', '.join(set_files)}: set, but {PROTOCOL}={self.protocol} does not use TLS; "
                f"use SSL or SASL_SSL, or unset {' and '.join(set_files)}"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            given, other = (CERTFILE, KEYFILE) if self.ssl_certfile else (KEYFILE, CERTFILE)
            raise SettingsError(f"{other}: required with {given} (mutual TLS needs the certificate and its key)")
        for name, path in ((CAFILE, self.ssl_cafile), (CERTFILE, self.ssl_certfile), (KEYFILE, self.ssl_keyfile)):
            if path:
                _readable_file(name, path)
        if self.uses_ssl:
            self.ssl_context()  # a file that is not PEM, or a key that does not match its certificate

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A new client TLS context (None without TLS); `SettingsError` naming the file it cannot use."""
        if not self.uses_ssl:
            return None
        from aiokafka.helpers import create_ssl_context

        try:
            context = create_ssl_context(cafile=self.ssl_cafile or None)
        except ssl.SSLError as exc:
            raise SettingsError(f"{CAFILE}: not a PEM file of certificates ({_ssl_reason(exc)})") from None
        if self.ssl_certfile:
            try:
                # A password callback that gives none: an encrypted key fails here instead
                # of OpenSSL prompting on the terminal.
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password=lambda: b"")
            except ssl.SSLError as exc:
                raise SettingsError(
                    f"{CERTFILE} / {KEYFILE}: cannot use them as a client certificate and its unencrypted key "
                    f"({_ssl_reason(exc)})"
                ) from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin client)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.reveal(),
            )
        return options

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials` (None for PLAINTEXT); Faust hands them to each of its clients."""
        import faust

        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.reveal(),
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),  # None: SASL_PLAINTEXT
            )
        if self.uses_ssl:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def env(self) -> dict[str, str]:
        """The variables that give these settings (password included), for a child process."""
        values = {
            PROTOCOL: self.protocol,
            MECHANISM: self.sasl_mechanism if self.uses_sasl else "",
            USERNAME: self.sasl_username,
            PASSWORD: self.sasl_password.reveal(),
            CAFILE: self.ssl_cafile,
            CERTFILE: self.ssl_certfile,
            KEYFILE: self.ssl_keyfile,
            CHECK_HOSTNAME: "" if self.ssl_check_hostname else "false",
        }
        return {name: value for name, value in values.items() if value}


def _one_of(allowed: tuple[str, ...]):
    def check(value: str) -> str | None:
        return None if value.upper() in allowed else f"expected one of {', '.join(allowed)}"

    return check


def _readable_file(name: str, path: str) -> None:
    p = Path(path)
    try:
        p.stat()
    except FileNotFoundError:
        raise SettingsError(f"{name}: no such file: {path}") from None
    except OSError:  # a folder on the way that this user may not enter
        raise SettingsError(f"{name}: not readable by this user: {path}") from None
    if not p.is_file():
        raise SettingsError(f"{name}: not a file: {path}")
    if not os.access(p, os.R_OK):
        raise SettingsError(f"{name}: not readable by this user: {path}")


def _ssl_reason(exc: ssl.SSLError) -> str:
    return getattr(exc, "verify_message", None) or exc.reason or str(exc)


# --------------------------------------------------------------------------- connecting


def describe(exc: BaseException, security: KafkaSecurity, bootstrap: str) -> str | None:
    """One line naming the setting behind a connection failure, or None when it is not a
    TLS or SASL problem. Never quotes the password."""
    from aiokafka import errors

    where = f"Kafka at {bootstrap}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if exc.verify_code == 62 or "mismatch" in reason.lower():  # X509_V_ERR_HOSTNAME_MISMATCH
            return (
                f"TLS: the broker's certificate does not name the address it was reached at "
                f"({KAFKA_BOOTSTRAP} / {CHECK_HOSTNAME}): {reason}"
            )
        return f"TLS: the broker's certificate is not trusted ({CAFILE}): {reason}"
    if isinstance(exc, ssl.SSLError):
        reason = _ssl_reason(exc)
        if "CERTIFICATE_REQUIRED" in reason.upper() or "BAD_CERTIFICATE" in reason.upper():
            return f"TLS: {where} refused the client certificate ({CERTFILE} / {KEYFILE}): {reason}"
        return (
            f"{HANDSHAKE_FAILED} {where} failed ({PROTOCOL}={security.protocol}: "
            f"does that listener speak TLS?): {reason}"
        )
    if isinstance(exc, errors.UnsupportedSaslMechanismError) or (
        isinstance(exc, errors.KafkaError) and "sasl mechanism" in str(exc).lower() and "enabled" in str(exc).lower()
    ):
        return f"{where} does not accept {MECHANISM}={security.sasl_mechanism}: {_broker_text(exc, security)}"
    if isinstance(exc, (errors.SaslAuthenticationFailed, errors.IllegalSaslStateError)):
        return (
            f"Kafka refused the SASL login ({USERNAME} / {PASSWORD}): {security.sasl_mechanism} as "
            f"{security.sasl_username!r}: {_broker_text(exc, security)}"
        )
    return None


KAFKA_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
HANDSHAKE_FAILED = "TLS: the handshake with"


def _broker_text(exc: BaseException, security: KafkaSecurity) -> str:
    """The broker's own words, without aiokafka's "[Error 58] SaslAuthenticationFailed: " prefix."""
    text = _scrub(" ".join(str(exc).split()), security)
    head, sep, rest = text.partition(f"{type(exc).__name__}: ")
    return (rest if sep and head.startswith("[Error") else text) or type(exc).__name__


def _scrub(text: str, security: KafkaSecurity) -> str:
    password = security.sasl_password.reveal()
    return text.replace(password, "***") if password else text


async def diagnose(security: KafkaSecurity, bootstrap: str, exc: BaseException, *, timeout: float = 10.0) -> str | None:
    """The TLS, SASL or protocol problem behind a client's failure to connect to
    `bootstrap`, in one line naming the setting; None when it is none of those (the
    broker is down or unreachable). `exc` may say so itself; else one direct connection
    to each bootstrap server finds the error aiokafka only logged; else, or when the TLS
    handshake itself failed, the listener is asked which protocol it speaks
    (`streams.kafkaprobe`: a PLAINTEXT client at a SASL_SSL listener, and the reverse)."""
    found = describe(exc, security, bootstrap)
    if not found and security.protocol != "PLAINTEXT":
        found = await _connect_directly(security, bootstrap, timeout)
    if found is None or found.startswith(HANDSHAKE_FAILED):
        from streams.kafkaprobe import suggestion

        try:
            hint = await suggestion(bootstrap, security.protocol, timeout=min(timeout, 5.0))
        except Exception:  # noqa: BLE001 - only a hint: the line without it stands
            hint = None
        if hint:
            return f"cannot reach Kafka at {bootstrap} ({KAFKA_BOOTSTRAP}): {hint}"
    return found


async def _connect_directly(security: KafkaSecurity, bootstrap: str, timeout: float) -> str | None:
    from aiokafka.conn import create_conn

    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        conn = None
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"), int(port), request_timeout_ms=int(timeout * 1000), **security.client_options()
                ),
                timeout,
            )
        except Exception as probe:  # noqa: BLE001 - classified below
            found = describe(probe, security, bootstrap)
            if found:
                return found
        finally:
            if conn is not None:
                conn.close()
    return None


async def start_client(client: Any, security: KafkaSecurity, bootstrap: str) -> None:
    """`await client.start()` for an aiokafka producer, consumer or admin client. When it
    cannot connect because of TLS or SASL, close it and raise `KafkaConnectError` with
    `diagnose`'s line; any other failure (an unreachable broker) is raised as it is."""
    try:
        with quiet_client_logs():
            await client.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await (client.close() if hasattr(client, "close") else client.stop())
        problem = await diagnose(security, bootstrap, exc)
        if problem:
            raise KafkaConnectError(problem) from None
        raise


@contextlib.contextmanager
def quiet_client_logs() -> Iterator[None]:
    """aiokafka logs each failed connection as an error before raising; the caller says
    what went wrong once, so hold those lines back meanwhile."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)
