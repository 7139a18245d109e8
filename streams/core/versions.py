"""Record versions: every stored dict carries `"v"`, and a worker reads every version
it knows, so a newer worker can read what an older one wrote; one written by a newer
worker is refused rather than misread (`check_version`), and a scan over a table
leaves such records out, counting them (`Readable`).

Users and groups are at version 2 (destination slots); version 1 kept
CustomerSuccessBox's ids in top-level fields, which `read_slots` moves into that
destination's slot (`V1_SLOT_FIELDS`). Pending and dedupe records are at
`STATE_VERSION`. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

STATE_VERSION = 1  # pending and dedupe records
USER_VERSION = 2  # users and groups: 2 moved destination ids into slots

# Version 1 of the user and group records (frozen: it is what older workers wrote) kept
# CustomerSuccessBox's ids as top-level fields. Reading one, they move into the slot of
# the destination that owns them: field -> (destination key, slot field).
V1_SLOT_FIELDS: Mapping[str, tuple[str, str]] = {
    "csb_account_id": ("customersuccessbox", "account_id"),
    "csb_user_id": ("customersuccessbox", "user_id"),
}


def check_version(data: Mapping[str, Any], what: str, current: int = STATE_VERSION) -> int:
    """The record's version; a record written by a newer worker is refused rather than
    misread (rolling upgrades go forward)."""
    version = data.get("v", 1)
    if version > current:
        raise ValueError(f"{what} record version {version} is newer than this worker ({current})")
    return version


def read_slots(data: Mapping[str, Any], version: int) -> dict[str, dict[str, Any]]:
    slots = {key: dict(slot) for key, slot in (data.get("slots") or {}).items()}
    if version < 2:
        for old, (dest, name) in V1_SLOT_FIELDS.items():
            if data.get(old) is not None:
                slots.setdefault(dest, {})[name] = data[old]
    return slots


K = TypeVar("K")
R = TypeVar("R")


class Readable(Generic[R]):
    """Reads a table's values with `read` (a `from_dict`), leaving out, and counting in
    `skipped`, those it refuses: during a rolling upgrade an older worker meets records
    a newer one wrote, and one such record must not stop a scan over every user."""

    def __init__(self, read: Callable[[Any], R], errors: tuple[type[Exception], ...] = (ValueError,)) -> None:
        self.read = read
        self.errors = errors
        self.skipped = 0

    def each(self, items: Iterable[tuple[K, Any]]) -> Iterator[tuple[K, R]]:
        for key, data in items:
            try:
                record = self.read(data)
            except self.errors:
                self.skipped += 1
                continue
            yield key, record
