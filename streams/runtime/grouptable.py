"""The `groups` table: a GlobalTable that says which rows changed, so that the rows read
from it can be kept (`cached`) until they do.

Every call of a user in a group reads the group (ClientSuccess's organization,
CustomerSuccessBox's account). A read of a Faust table on RocksDB is two lookups (`in`,
then the read), the key encoded twice and the row decoded: about 20 us a read (py-spy,
bench scenario b), for a row that changes only when a group call is applied. The users'
rows are kept by a `CachedRows` written through by the runtime and cleared on every
assignment; the groups' rows change behind the runtime's back as well: every worker
reads every group's changelog (a GlobalTable), and applies the other workers' writes.

`GroupsTable` tells its listeners (`when_changed`) of every change of its store: a row
written or deleted here (`on_key_set`, `on_key_del`), each row of a changelog batch
applied (recovery, and the groups' changelog read on), and, with the key None (all
rows), a rebalance, a completed recovery and a reset. `cached(table)` is a
`CachedRows` over it that forgets what the table says changed: a read is then a
lookup in memory until the group's row changes, and so is the `GroupState` decoded
from it (`CachedRows.decoded`, read by `streams.runtime.rows.GroupReads.stored`):
a track does not decode its group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import faust

from streams.runtime.rowcache import CachedRows
from streams.runtime.rows import ROWS

# Groups are few and small next to users: 4,096 rows, within 4 MB (a row above that is
# read from the table each time).
MAX_BYTES = 4 * 1024 * 1024

Listener = Callable[[Any], None]  # told the key of a row that changed (None: any row may have)


class GroupsTable(faust.GlobalTable):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listeners: list[Listener] = []

    def when_changed(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, key: Any) -> None:
        for listener in self._listeners:
            listener(key)

    def on_key_set(self, key: Any, value: Any) -> None:
        super().on_key_set(key, value)
        self._changed(key)

    def on_key_del(self, key: Any) -> None:
        super().on_key_del(key)
        self._changed(key)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        events = list(batch)
        try:
            super().apply_changelog_batch(events)
        finally:
            for event in events:
                key = getattr(event, "key", None)
                self._changed(key if isinstance(key, str) else None)

    def reset_state(self) -> None:
        super().reset_state()
        self._changed(None)

    async def on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        self._changed(None)
        await super().on_rebalance(*args, **kwargs)
        self._changed(None)

    async def on_recovery_completed(self, *args: Any, **kwargs: Any) -> None:
        await super().on_recovery_completed(*args, **kwargs)
        self._changed(None)


def groups_table(app: faust.App, name: str, options: dict[str, Any]) -> GroupsTable:
    """The app's `groups` table, as `app.GlobalTable` makes a global table, of this class."""
    table = GroupsTable(
        app,
        name=name,
        default=None,
        beacon=app.tables.beacon,
        standby_buffer_size=1,  # each changelog record applied as it comes (app.GlobalTable's)
        is_global=True,
        options=options,
    )
    app.tables.add(table)
    return table


def cached(table: GroupsTable, size: int = ROWS, max_bytes: int = MAX_BYTES) -> CachedRows:
    """The rows of `table` as read last, until the table says they changed."""
    rows = CachedRows(table, size=size, max_bytes=max_bytes)
    table.when_changed(rows.forget)
    return rows
