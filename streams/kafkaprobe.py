"""Which security protocol a Kafka listener speaks, found without logging in.

When a client cannot connect, aiokafka says only that no broker answered: a PLAINTEXT
client at a SASL_SSL listener reads a TLS alert where it expected a Kafka answer, and a
TLS client at a PLAINTEXT listener has its handshake cut. `listener_protocol` asks the
listener one harmless question, Kafka's SaslHandshake for PLAIN (which carries no
credentials), first in the clear and then over TLS (the certificate is not checked: this
only finds the protocol, and nothing secret is sent). A listener with SASL answers with
its mechanisms; one without answers ILLEGAL_SASL_STATE; one that speaks TLS when asked
in the clear answers garbage or hangs up. `suggestion` turns the finding into the line
a command prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass

SASL_HANDSHAKE = 17  # Kafka's API key; version 1
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_SASL_MECHANISM = 33
MAX_ANSWER = 64 * 1024  # a SaslHandshake answer is tens of bytes; a TLS alert read as a size is ~350 MB


@dataclass(frozen=True)
class Listener:
    tls: bool
    sasl: bool
    mechanisms: tuple[str, ...] = ()

    @property
    def protocol(self) -> str:
        return ("SASL_" if self.sasl else "") + ("SSL" if self.tls else "PLAINTEXT")


def _request() -> bytes:
    client = b"cs-relay"
    body = struct.pack(">hhih", SASL_HANDSHAKE, 1, 1, len(client)) + client + struct.pack(">h", 5) + b"PLAIN"
    return struct.pack(">i", len(body)) + body


def _parse(data: bytes) -> tuple[int, tuple[str, ...]] | None:
    """(error code, mechanisms) of a SaslHandshake answer; None when it is not one."""
    try:
        correlation, error, count = struct.unpack(">ihi", data[:10])
        if correlation != 1 or not 0 <= count <= 32:
            return None
        mechanisms, at = [], 10
        for _ in range(count):
            (size,) = struct.unpack(">h", data[at : at + 2])
            mechanisms.append(data[at + 2 : at + 2 + size].decode("ascii"))
            at += 2 + size
    except (struct.error, UnicodeDecodeError):
        return None
    return error, tuple(mechanisms)


async def _ask(host: str, port: int, tls: bool, timeout: float) -> Listener | None:
    options: dict = {}
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only which protocol; no secret is sent
        options = {"ssl": context, "server_hostname": host}
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, **options), timeout)
    try:
        writer.write(_request())
        await writer.drain()
        (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), timeout))
        if not 0 < size <= MAX_ANSWER:
            return None
        answer = _parse(await asyncio.wait_for(reader.readexactly(size), timeout))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if answer is None:
        return None
    error, mechanisms = answer
    if error == ILLEGAL_SASL_STATE:
        return Listener(tls=tls, sasl=False)
    if error in (0, UNSUPPORTED_SASL_MECHANISM):
        return Listener(tls=tls, sasl=True, mechanisms=mechanisms)
    return None


async def listener_protocol(host: str, port: int, timeout: float = 5.0) -> Listener | None:
    """What the listener at host:port speaks; None when it does not answer as Kafka does."""
    for tls in (False, True):
        try:
            found = await _ask(host, port, tls, timeout)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            continue
        if found is not None:
            return found
    return None


async def suggestion(bootstrap: str, configured: str, timeout: float = 5.0) -> str | None:
    """A line naming the protocol the first bootstrap server speaks, when it is not the
    configured one; None when it is, or when nothing answered as Kafka does."""
    server = bootstrap.split(",")[0].strip()
    host, _, port = server.rpartition(":")
    found = await listener_protocol(host.strip("[]"), int(port), timeout)
    if found is None or found.protocol == configured:
        return None
    mechanisms = f" (SASL mechanisms {', '.join(found.mechanisms)})" if found.mechanisms else ""
    return (
        f"the listener at {server} speaks {found.protocol}{mechanisms}, not {configured}: "
        f"set KAFKA_SECURITY_PROTOCOL={found.protocol}"
    )
