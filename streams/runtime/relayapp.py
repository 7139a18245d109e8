"""The Faust app class and its configuration.

`RelayApp` stops gracefully, and `create_app(settings)` configures Faust for cs-relay:
RocksDB tables, `acks=all` producing, commit and session timing, standbys, and the web
server other workers call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from streams.runtime import faust_fixes, tablestore
from streams.runtime.monitor import MonitorOffTheSensors
from streams.runtime.stopping import FINAL_COMMIT_TIMEOUT, STOP_GRACE, StopDeadline, Unflushed
from streams.runtime.tablestore import TableMemory
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

# A dead letter keeps the original bytes, and an input record may be as large as the
# broker allows (1 MB by default): the producer and the dead-letter topic take more.
MAX_RECORD_BYTES = 4 * 1024 * 1024
# How long the producer gathers records (changelog rows, control records) into one
# produce request. Each request costs a socket write and the broker's work on the same
# two cores: 5 ms made 100-270 requests a second in scenario c, and its profile had
# 4.7 % of the worker's samples in those writes. With the input keyed in place only
# acknowledgements wait for these writes (but for records outside their user's partition,
# which take the hop all the same: docs/configuration.md), and 20 ms drained c faster in 6 of 6 paired
# rounds against 5 ms, and 50 ms slower than 20 in 4 of 4. Through the by-user hop every
# event's routing waits for its by-user record's write as well: there 20 ms took scenario
# a's paced latency to p50 69 / p99 176 ms, so the hop keeps 5 ms. docs/benchmarks.md,
# "the producer's linger".
PRODUCER_LINGER = 0.005  # seconds, with the by-user hop
PRODUCER_LINGER_KEYED = 0.02  # seconds, with CS_RELAY_INPUT_KEYED_BY_USER
SENDERS_STOP_TIMEOUT = 5.0  # seconds for the senders to end once the clients are closed

# RocksDB's memory. Faust opens one database per table partition (seven tables x the
# partitions a worker holds), and its defaults are 64 MB write buffers, up to three of
# them, and a 2 GB block cache per database: a worker kept nearly every row it wrote in
# memory until a buffer filled (355 MB of RSS at 370,000 users in `make bench` scenario
# f). Small buffers flush to disk early, and every database of a worker shares one cache
# (streams.runtime.tablestore): blocks, index and filter blocks and the memtables of all
# of them together within TABLE_MEMORY_BYTES, the memtables within TABLE_WRITE_BUFFER_BYTES
# of it. Reads past the row caches (streams.runtime.rowcache) come from that cache and
# the bloom filters.
TABLE_OPTIONS: dict[str, int] = {
    "write_buffer_size": 2 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 8 * 1024 * 1024,
}
TABLE_MEMORY_BYTES = 48 * 1024 * 1024
TABLE_WRITE_BUFFER_BYTES = 24 * 1024 * 1024


class RelayApp(MonitorOffTheSensors):
    """A Faust app that stops gracefully: on SIGTERM it stops fetching, lets in-flight
    deliveries finish (bounded by CS_RELAY_SHUTDOWN_TIMEOUT), commits what they
    acknowledged, and only then lets Faust stop the consumer. Faust's own stop commits
    first and would leave the last finished events to be processed again. It logs one
    line of what it could not flush, and a deadline (`streams.runtime.stopping`) ends the
    process CS_RELAY_SHUTDOWN_TIMEOUT + STOP_GRACE seconds after the stop began."""

    runtime: Runtime | None = None  # set by streams.runtime.app once it is built
    _final_commit = False  # whether the stop's commit was made
    _left: Unflushed | None = None  # what the stop's drain and commit left
    table_memory: TableMemory | None = None  # set by create_app: what its tables' databases share

    def _new_producer(self) -> Any:
        return faust_fixes.with_bounded_flush(super()._new_producer())

    async def on_stop(self) -> None:
        runtime = self.runtime
        consumer = self._consumer
        if runtime is not None:
            runtime.spills.stop()  # no spilled delivery is started now: the tables close soon
            # However the broker is (gone, or killed meanwhile) and wherever Faust's stop
            # then waits, the process ends in time, saying what was left; never disarmed:
            # the process ends after the app stops.
            timeout = runtime.settings.shutdown_timeout
            StopDeadline(timeout + STOP_GRACE, lambda: self._unflushed().line()).start()
        if consumer is not None and runtime is not None:
            consumer.stop_flow()
            self.flow_control.suspend()
            self.flow_control.clear()
            await runtime.acks.drain(timeout=timeout)
            try:
                await asyncio.wait_for(consumer.commit(), FINAL_COMMIT_TIMEOUT)
                self._final_commit = True
            except TimeoutError:  # the broker may be gone; uncommitted events are redone
                log.warning("final commit: no answer within %.0f s", FINAL_COMMIT_TIMEOUT)
            except Exception as exc:
                log.warning("final commit failed: %s: %s", type(exc).__name__, exc)
        if runtime is not None:
            # What the drain left, before closing the clients ends the deliveries still running.
            self._left = unflushed = self._unflushed()
            (log.info if unflushed.nothing else log.warning)("stopping: %s", unflushed.line())
            await runtime.close_clients()
            # Then the senders (streams.runtime.senders) end, with whatever was left to them.
            if not await runtime.sending.senders.stop(SENDERS_STOP_TIMEOUT):
                log.warning("stopping: some deliveries did not stop within %.0f s", SENDERS_STOP_TIMEOUT)
            runtime.acks.stop()  # the partitions' acknowledging coroutines, and the packed rows' writer
            runtime.seen_packs.stop()
        await super().on_stop()

    def _unflushed(self) -> Unflushed:
        """What is left at this point of the stop (read from the deadline's thread too: counts
        only): the events and deliveries the drain left, once it has ended, and the records
        still buffered now."""
        runtime = self.runtime
        producer = self._producer
        unsent = producer.buffer.size if producer is not None else 0
        if self._left is not None:
            return dataclasses.replace(self._left, unsent=unsent)
        return Unflushed(
            unacknowledged=runtime.acks.in_flight if runtime is not None else 0,
            deliveries=len(runtime.sending.senders) if runtime is not None else 0,
            unsent=unsent,
            committed=self._final_commit,
        )


def create_app(settings: Settings) -> RelayApp:
    tablestore.register()
    app = RelayApp(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
        # TLS and SASL (KAFKA_SECURITY_PROTOCOL ...): Faust gives them to each of its clients.
        broker_credentials=settings.kafka_security.faust_credentials(),
        store=f"{tablestore.SCHEME}://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Let the producer gather records (PRODUCER_LINGER): an event's records (its
        # by-user record, its changelog writes) go out with others' in one produce
        # request instead of one request each. First measured with `make bench`
        # (scenario b, 2026-11-30): 5 ms took CPU per track from 2.04 to 1.79 ms; 20 ms
        # gave no more then. With the input keyed in place, 20 ms since: see above.
        producer_linger=PRODUCER_LINGER_KEYED if settings.input_keyed_by_user else PRODUCER_LINGER,
        producer_max_request_size=MAX_RECORD_BYTES,
        # A worker that dies is noticed after the session timeout; only then are its
        # partitions handed to the others (Faust's default is 60 s).
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        # Committing often keeps the redo after a crash short (duplicates, not losses).
        broker_commit_interval=settings.commit_interval,
        # Standbys keep a copy of other workers' table partitions up to date, so a worker
        # that takes over after a loss resumes without replaying the whole changelog.
        table_standby_replicas=settings.standby_replicas,
        # A topic created while a worker joins is picked up at the next metadata refresh
        # (Faust's default is 5 minutes).
        consumer_metadata_max_age_ms=30_000,
        web_host=settings.advertised_web_host,  # the canonical URL other workers call
        web_port=settings.web_port,
        web_bind=settings.web_host,
        # A rebalance must not wait for partner deliveries (see intake.fetched_before_a_rebalance).
        stream_wait_empty=False,
    )
    app.table_memory = TableMemory(TABLE_MEMORY_BYTES, TABLE_WRITE_BUFFER_BYTES)
    return app
