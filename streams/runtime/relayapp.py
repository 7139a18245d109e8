"""The Faust app class and its configuration.

`RelayApp` stops gracefully, and `create_app(settings)` configures Faust for cs-relay:
RocksDB tables, `acks=all` producing, commit and session timing, standbys, and the web
server other workers call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import faust

from streams.runtime import faust_fixes, tablestore
from streams.runtime.tablestore import TableMemory
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

# A dead letter keeps the original bytes, and an input record may be as large as the
# broker allows (1 MB by default): the producer and the dead-letter topic take more.
MAX_RECORD_BYTES = 4 * 1024 * 1024
PRODUCER_LINGER = 0.005  # seconds

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


class RelayApp(faust.App):
    """A Faust app that stops gracefully: on SIGTERM it stops fetching, lets in-flight
    deliveries finish (bounded by CS_RELAY_SHUTDOWN_TIMEOUT), commits what they
    acknowledged, and only then lets Faust stop the consumer. Faust's own stop commits
    first and would leave the last finished events to be processed again."""

    runtime: Runtime | None = None  # set by streams.runtime.app once it is built
    table_memory: TableMemory | None = None  # set by create_app: what its tables' databases share

    def _new_producer(self) -> Any:
        return faust_fixes.with_bounded_flush(super()._new_producer())

    async def on_stop(self) -> None:
        runtime = self.runtime
        consumer = self._consumer
        if consumer is not None and runtime is not None:
            consumer.stop_flow()
            self.flow_control.suspend()
            self.flow_control.clear()
            timeout = runtime.settings.shutdown_timeout
            finished = await runtime.acks.drain(timeout=timeout)
            if not finished:
                log.warning(
                    "stopping with %d events unacknowledged after %.0f s; they will be processed again",
                    runtime.acks.in_flight,
                    timeout,
                )
            try:
                await consumer.commit()
            except Exception:  # the broker may be gone; uncommitted events are redone
                log.exception("final commit failed")
        if runtime is not None:
            await runtime.close_clients()
        await super().on_stop()


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
        # Let the producer gather records for a few milliseconds: an event's records
        # (its by-user record, its changelog writes) go out with others' in one produce
        # request instead of one request each. Measured with `make bench` (scenario b):
        # CPU per track 2.04 -> 1.79 ms, 471 -> 542 tracks/s; 20 ms gave no more.
        producer_linger=PRODUCER_LINGER,
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
        # A rebalance must not wait for partner deliveries (see agents.fetched_before_a_rebalance).
        stream_wait_empty=False,
    )
    app.table_memory = TableMemory(TABLE_MEMORY_BYTES, TABLE_WRITE_BUFFER_BYTES)
    return app
