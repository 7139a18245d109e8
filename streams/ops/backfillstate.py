"""Today's state of users and groups, for `cs-relay backfill`: read from a running worker
(`GET /users/{id}`, `/groups/{id}`: any worker forwards to the one that owns the user),
cached for the run, and never written. A visitor who has logged in is read as the user
they became (`merged_into`)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from streams.cli.inspection import Unreachable, get
from streams.core.state import GroupState, UserState

MAX_CACHED = 100_000  # users and groups kept for the run; the oldest are read again past it


class StateUnavailable(Exception):
    """The worker could not be reached, or answered an error other than 404."""


class TodaysState:
    def __init__(self, url: str, token: str) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._users: dict[str, UserState | None] = {}
        self._groups: dict[str, GroupState | None] = {}

    async def user(self, key: str) -> UserState | None:
        seen: set[str] = set()
        while key not in seen:  # a merged visitor: its user (never a loop)
            seen.add(key)
            if key not in self._users:
                data = await self._read("/users/", key)
                self._keep(self._users, key, UserState.from_dict(data) if data else None)
            user = self._users[key]
            if user is None or not user.merged_into:
                return user
            key = user.merged_into
        return None

    async def load_groups(self, user: UserState | None, *group_ids: str | None) -> None:
        """Read the groups the decision may look up (the user's and the call's)."""
        wanted = {g for g in (*group_ids, user.group_id if user else None) if g}
        for group_id in wanted - set(self._groups):
            data = await self._read("/groups/", group_id)
            self._keep(self._groups, group_id, GroupState.from_dict(data) if data else None)

    def group(self, group_id: str) -> GroupState | None:
        return self._groups.get(group_id)

    async def _read(self, path: str, key: str) -> Any:
        url = f"{self._url}{path}{quote(key, safe='')}"
        try:
            status, body = await asyncio.to_thread(get, url, self._token)
        except Unreachable as exc:
            raise StateUnavailable(str(exc)) from None
        if status == 404:
            return None
        if status != 200:
            detail = body.get("detail") if isinstance(body, dict) else body
            hint = " (export CS_RELAY_ADMIN_TOKEN in this shell)" if status == 401 else ""
            raise StateUnavailable(f"the worker answered {status} for {path}{key}: {detail}{hint}")
        return body

    @staticmethod
    def _keep(cache: dict[str, Any], key: str, value: Any) -> None:
        if len(cache) >= MAX_CACHED:
            cache.pop(next(iter(cache)))
        cache[key] = value
