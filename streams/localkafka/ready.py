"""Whether a broker serves: a metadata request answered, not merely a port open."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable

from streams.kafkaconn import KafkaConnectError, KafkaSecurity, start_client
from streams.localkafka.errors import KafkaLaunchError


async def wait_until_ready(bootstrap: str, timeout: float, security: KafkaSecurity | None = None) -> None:
    """Return once the broker(s) at `bootstrap` answer a metadata request; raise KafkaLaunchError after `timeout` s.

    Usable on its own, for a broker started elsewhere (`KAFKA_BOOTSTRAP_SERVERS`), with
    `security` (`Settings.kafka_security`) when that broker needs TLS or SASL.
    """
    await wait_ready(bootstrap, timeout, None, security)


async def wait_ready(
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


def run_sync(coro) -> None:
    """Run `coro` to completion from synchronous code, even if this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-ready") as pool:
        pool.submit(asyncio.run, coro).result()
