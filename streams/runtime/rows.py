"""The state door: the rows the routing step reads and the dedupe rows it writes, in one
module, so that a call's routing enters it once to read (`Rows.read`) and once to
remember its messageId (`OpenPacks.remember`), and the packed row that takes the
entries to Kafka is written here too (`OpenPacks.flush`). docs/architecture.md says
what each class keeps ("The runtime's parts", the `rows` and `seen_packs` rows) and
the path ("One track's path").
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from streams.core import seenpack
from streams.core.dedupe import Seen
from streams.core.grouplookup import newer, prefetched, with_copy
from streams.core.memsize import approx_bytes
from streams.core.message import Message
from streams.core.pending import Pending
from streams.core.pendingcounts import PendingCounts
from streams.core.seenpack import Packer
from streams.core.state import GroupLookup, GroupState, UserState
from streams.runtime.acks import ChangelogWrites
from streams.runtime.pendingstore import PendingStore
from streams.runtime.seentable import local_of

log = logging.getLogger(__name__)

_ABSENT = object()
ROWS = 4096
MAX_BYTES = 16 * 1024 * 1024  # per table (users, pending, seen: 48 MB); 4,096 user rows of ~4 KB fit
ENTRY_BYTES = 200  # the LRU's node and the entry's list
T = TypeVar("T")
Table = MutableMapping[str, Any]
# `Rows.read`: the dedupe row, the legacy one, the user's record, its pending record, its groups
Read = tuple[Any, Seen, UserState | None, Pending, GroupLookup]


class KeptRows:
    """The LRU of a table's rows, the hot half of `rowcache.CachedRows` (which wraps the
    table and adds the cold mapping methods)."""

    def __init__(self, table: Any, size: int = ROWS, max_bytes: int = MAX_BYTES) -> None:
        self.table = table
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0  # the estimate of what the rows kept take
        # key -> [row, what `decoded` made of it, the entry's estimated bytes]
        self._rows: OrderedDict[Any, list[Any]] = OrderedDict()
        self._local = local_of(table)  # the rows by partition (`get_local` ...)
        self._native = self._local is table  # a seen table: its RocksDB databases read here
        self._raw: tuple[Any, bytes] = (None, b"")  # the last key encoded (a lookup, then its write)

    def get(self, key: Any, default: Any = None) -> Any:
        row = self._entry(key)[0]
        return default if row is None else row

    def decoded(self, key: Any, read: Callable[[Any], T]) -> T:
        """`read(row)` (a frozen record made from the row), made once per version of the
        row: rows are replaced, never changed, so the same row object is the same version."""
        entry = self._entry(key)
        if entry[1] is _ABSENT:
            entry[1] = read(entry[0])
        return entry[1]

    def _entry(self, key: Any) -> list[Any]:
        entry = self._rows.get(key)
        if entry is None:
            entry = self._keep(key, self.table.get(key))
        else:
            self._rows.move_to_end(key)
        return entry

    def __setitem__(self, key: Any, value: Any) -> None:
        self.table[key] = value
        self._keep(key, value)

    def put(self, key: Any, row: Any, decoded: Any) -> None:
        """Write `row`, keeping `decoded` as what `decoded()` makes of it."""
        self[key] = row
        entry = self._rows.get(key)
        if entry is not None:
            entry[1] = decoded

    def _store(self, partition: int) -> tuple[Any, Any]:
        """The seen table's store and its RocksDB database of `partition`; no database
        for another store or table (their own `*_local` methods then)."""
        store = self.table.data if self._native else None
        db_for = getattr(store, "_db_for_partition", None)
        return store, None if db_for is None else db_for(partition)

    def _raw_key(self, store: Any, key: Any) -> bytes:
        """The key as the store has it (~3 us), once for a lookup and the write after it."""
        last, raw = self._raw
        if last != key or not raw:
            raw = store._encode_key(key)
            self._raw = (key, raw)
        return raw

    def get_local(self, partition: int, key: Any) -> Any:
        """A row kept, else the store of `partition`'s, not kept: a dedupe lookup of a new
        id, which `put_local` writes next."""
        entry = self._rows.get(key)
        if entry is not None:
            self._rows.move_to_end(key)
            return entry[0]
        store, db = self._store(partition)
        if db is None:
            return self._local.get_local(partition, key)
        raw = db.get(self._raw_key(store, key))
        return None if raw is None else store._decode_value(raw)

    def put_local(self, partition: int, key: Any, value: Any) -> None:
        """A row written to the store alone, no changelog record: a new id's dedupe row,
        read again only if the id comes again, so not kept."""
        self._drop(key)
        store, db = self._store(partition)
        if db is None:
            self._local.put_local(partition, key, value)
            return
        raw = self._raw_key(store, key)
        db.put(raw, store._encode_value(value))
        store._key_index[raw] = partition

    def write_packed(self, partition: int, key: Any, value: Any) -> Any:
        """A packed row to the changelog of `partition`, its summary to the store (not
        kept: the sweep alone reads it); returns the changelog write."""
        if self._store(partition)[1] is None:
            self._drop(key)
            return self._local.write_packed(partition, key, value)
        self.put_local(partition, key, seenpack.summary_of(value))
        send = self.table.send_changelog  # as the table has it, not as the acks watch it: the
        # events of the row wait for its own future (`OpenPacks.flush`), not a batch's writes
        return getattr(send, "__wrapped__", send)(partition, key, value)

    def clear(self) -> None:
        """Forget every row kept (the table keeps them)."""
        self._rows.clear()
        self.bytes = 0

    def _keep(self, key: Any, row: Any) -> list[Any]:
        self._drop(key)
        entry = [row, _ABSENT, ENTRY_BYTES + approx_bytes(key) + 2 * approx_bytes(row)]
        if entry[2] > self.max_bytes:
            return entry  # too large to keep: read from the table each time
        self._rows[key] = entry
        self.bytes += entry[2]
        while len(self._rows) > self.size or self.bytes > self.max_bytes:
            self.bytes -= self._rows.popitem(last=False)[1][2]
        return entry

    def _drop(self, key: Any) -> None:
        entry = self._rows.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]


def decoded(table: Any, key: Any, read: Callable[[Any], T]) -> T:
    """`read(table.get(key))`, made once per version of the row where the table keeps
    them (`KeptRows`); any other table (a dict in unit tests) reads it each time."""
    if isinstance(table, KeptRows):
        return table.decoded(key, read)
    return read(table.get(key))


def _read_user(data: Any) -> UserState | None:
    return UserState.from_dict(data) if data else None


def _group(data: Mapping[str, Any] | None) -> GroupState | None:
    return GroupState.from_dict(data) if data else None


class Rows:
    def __init__(
        self,
        *,
        users: Table,
        pending: Table,
        payloads: Table,
        seen: Table,
        partition_of: Callable[[str], int],
        index_retry: Callable[[str, Pending], None],
    ) -> None:
        self.users = users
        self.seen_rows = seen
        self._seen_local = local_of(seen)  # the row cache itself in the worker
        self.pendings = PendingStore(pending, payloads)
        self.partition_of = partition_of
        self.index_retry = index_retry  # told of every pending record written (streams.runtime.parking)
        self.pending_counts = PendingCounts()  # events waiting, per destination and state, for /status

    def read(self, key: str, partition: int, row_key: str, msg: Message, groups: GroupReads) -> Read:
        """All that routing `msg` of user `key` reads, in one call: the dedupe row
        `row_key` of `partition`'s store, the user's legacy dedupe row (older versions
        wrote one per user), its record, its pending record, and the groups as the step
        looks them up: those `msg` and the user name read now, any other when asked."""
        user = self.user(key)
        found: dict[str, GroupState | None] = {}
        for group_id in (msg.group_id, msg.context_group_id, user.group_id if user is not None else None):
            if group_id and group_id not in found:
                found[group_id] = groups.get(group_id)
        known = self._seen_local.get_local(partition, row_key)
        return known, self.seen(key), user, self.pending(key), prefetched(found, groups.get)

    def user(self, key: str) -> UserState | None:
        return decoded(self.users, key, _read_user)

    def pending(self, key: str) -> Pending:
        pendings = self.pendings
        return decoded(pendings.index, key, lambda row: pendings.join(key, row))

    def seen(self, key: str) -> Seen:
        return decoded(self.seen_rows, key, Seen.from_dict)

    def store_pending(self, key: str, pending: Pending) -> None:
        self.index_retry(key, pending)
        before = self.pending(key)
        self.pending_counts.written(self.partition_of(key), key, before, pending)
        self.pendings.write(key, before, pending)

    def assigned(self, partitions: Iterable[int]) -> None:
        owned = set(partitions)
        for table in (self.users, self.pendings.index, self.seen_rows):
            if isinstance(table, KeptRows):
                table.clear()  # recovery may have replaced rows behind the cache
        self.pending_counts.assigned(owned)  # the new ones counted by the rescan


class GroupReads:
    """How the group view reads a group: the global copy (`stored`), or the record a
    group call routed here made, until the global copy has caught up (`get`)."""

    table: Mapping[str, Any]  # the global copy (a GlobalTable's row cache in the worker)
    bytes: int  # of the groups noted here
    _recent: OrderedDict[str, tuple[GroupState, int]]

    def get(self, group_id: str) -> GroupState | None:
        found = self.stored(group_id)
        entry = self._recent.get(group_id)
        if entry is None:
            return found
        recent = entry[0]
        if found is not None and (found.updated_at or "") >= (recent.updated_at or ""):
            self.drop(group_id)  # the global copy has caught up
            return found
        return newer(found, recent)

    def stored(self, group_id: str) -> GroupState | None:
        """The group's record in the global copy, decoded once per version of its row
        (`streams.runtime.grouptable.cached`: until the global table says it changed)."""
        return decoded(self.table, group_id, _group)

    def of(self, user: UserState | None) -> GroupLookup:
        """The groups as `user` sees them: with its own copy of its group where newer."""
        return with_copy(self.get, user)

    def drop(self, group_id: str) -> None:
        """Forget what was noted of the group (its global copy is read from now on)."""
        entry = self._recent.pop(group_id, None)
        if entry is not None:
            self.bytes -= entry[1]


@dataclass
class _Open:
    key: str
    packer: Packer
    # The events' work: once the row is written, its result is the row's changelog write
    # (the acks wait for that one in turn: `streams.runtime.acks.AckTracker`); failed if
    # the producer refused it, cancelled if the partition is revoked first.
    written: asyncio.Future[Any]


class OpenPacks:
    """The partitions' open packed dedupe rows: new entries join them (`remember`), and
    they are written (`flush`) when the shared linger timer runs out (it wakes
    `_lingering`, a coroutine started with the first row, which writes them all) or
    when full; `seenpacks.SeenPacks`, its subclass, makes, forgets, counts and stops
    them (its module says the rules)."""

    table: Any
    local: Any  # the table's rows by partition: the state door's `KeptRows` in the worker
    changelog: ChangelogWrites
    linger: float
    max_entries: int
    max_bytes: int
    written: int  # packed rows written, for tests and the profile
    _open: dict[int, _Open]
    _timer: asyncio.Handle | None  # sets `_wake` once `linger` has passed
    _wake: asyncio.Future[None] | None  # what `_lingering` waits on
    _lingerer: asyncio.Task[None] | None
    _token: str
    _count: int

    def remember(self, partition: int, row_key: str, offset: int, now: float) -> None:
        """Remember a dedupe entry of the event being handled (in `partition`): its index
        row to the store at once, the entry to the open packed row, for whose changelog
        write the event's acknowledgement waits."""
        self.local.put_local(partition, row_key, seenpack.index_row(offset, now))
        pack = self._open.get(partition)
        if pack is not None and not pack.packer.try_add(row_key, offset, now):
            self.flush(partition)  # full by its bytes: the entry opens the next row
            pack = None
        if pack is None:
            pack = self._opened(partition)
            pack.packer.add(row_key, offset, now)
        writes = self.changelog.collecting  # the batch's writes: read, not asked
        if writes is not None:
            writes.append(pack.written)
        if pack.packer.full:
            self.flush(partition)

    def _opened(self, partition: int) -> _Open:
        loop = asyncio.get_running_loop()
        packer = Packer(max_bytes=self.max_bytes, max_entries=self.max_entries)
        self._count += 1
        pack = _Open(seenpack.pack_key(partition, f"{self._token}.{self._count}"), packer, loop.create_future())
        if self._timer is None:
            wake = self._wake
            if wake is None:  # the first row: the coroutine that writes them
                self._wake = wake = loop.create_future()
                self._lingerer = loop.create_task(self._lingering(), context=contextvars.Context())
            if not wake.done():  # else the rows are written at its next turn, this one too
                if self.linger > 0:
                    self._timer = loop.call_later(self.linger, wake.set_result, None)
                else:
                    self._timer = loop.call_soon(wake.set_result, None)
        self._open[partition] = pack
        return pack

    async def _lingering(self) -> None:
        """Write every partition's open row each time the linger timer runs out (one
        timer for all: their records reach the producer at once, in one produce request)."""
        loop = asyncio.get_running_loop()
        while True:
            assert self._wake is not None
            await self._wake
            self._wake = loop.create_future()
            self._timer = None
            for partition in list(self._open):
                try:
                    self.flush(partition)
                except Exception:  # one row's write must not end the writing of every row
                    log.exception("a packed dedupe row could not be written; its events stay unacknowledged")

    def flush(self, partition: int) -> None:
        """Write the partition's open packed row, if any."""
        pack = self._open.pop(partition, None)
        if pack is None:
            return
        if not self._open and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            write = self.local.write_packed(partition, pack.key, pack.packer.value())
        except Exception as exc:  # noqa: BLE001 - the producer refused it: the events' work failed
            if not pack.written.done():
                pack.written.set_exception(exc)
            return
        self.written += 1
        # Cancelled meanwhile (a wait on the batch's writes cancelled): its events' work
        # is not done; the row is written all the same. A unit test's table returns no
        # changelog write to wait for.
        if not pack.written.done():
            pack.written.set_result(None if write is None else asyncio.ensure_future(write))
