"""Work-arounds for faust-streaming 0.15 behaviour that would lose or stall events.

Each patch is small, applied once by `install()` (from `streams.app`), and pinned to
the Faust range in pyproject.toml; each says what it fixes and how to see that it is
still needed.

1. `Recovery.on_recovery_completed` resumes the stream partitions *before* seeking
   them to their committed offsets. Records fetched in between reach the stream
   buffers, are dropped when flow control resumes, and the offset jump they leave
   makes Faust's gap tracking (`Consumer._add_gap`) count them as acknowledged: after
   a takeover the input offset was committed past records nobody processed (seen in
   tests/test_e2e_scale.py: about one failover in three lost events). The patched
   copy seeks first and resumes afterwards; nothing else changes.

2. Before committing offsets Faust flushes the producer, so that the changelog records
   of the acknowledged events are in Kafka first. Its buffer flush drains until the
   buffer is empty, and with table writes arriving all the time it never is: commits
   stopped for as long as traffic lasted (a crash then redid all of it).
   `with_bounded_flush` makes the flush wait for what is buffered when it starts, which
   is enough: the changelog records of every acknowledged event were buffered before
   its acknowledgement. `RelayApp._new_producer` applies it to Faust's producer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables.recovery import Recovery

_installed = False


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """Faust 0.15.3's `Recovery.on_recovery_completed`, with the seek moved before
    the stream partitions are resumed."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table]))
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


def with_bounded_flush(producer: Any) -> Any:
    """Give Faust's producer a buffer flush that terminates under load (patch 2)."""
    buffer = producer.buffer

    async def flush_what_is_buffered_now() -> None:
        await buffer.flush_atmost(buffer.size)

    buffer.flush = flush_what_is_buffered_now
    return producer


def install() -> None:
    global _installed
    if not _installed:
        Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
        _installed = True
