"""`cs-relay preview` against a running worker: each user's messages, in order, to the
worker's `POST /preview/{userId}` (any worker: the one that does not own the user
forwards the request to the one that does), and the answers put back in input order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from streams.cli.inspection import Unreachable, get
from streams.core.previewtext import per_user, request_body


class WorkerUnavailable(Exception):
    """The worker could not be reached or refused the request: the message says which."""


def from_worker(raws: Sequence[bytes], url: str, token: str) -> list[dict[str, Any]]:
    """The previews of `raws` by the worker at `url`. Messages of one user are previewed
    together, in order; users apart (a group call of one user does not reach another
    user's preview until the worker has routed it)."""
    by_user, results = per_user(raws)
    for key, indexes in by_user.items():
        body = request_body([raws[i] for i in indexes])
        try:
            status, answer = get(f"{url.rstrip('/')}/preview/{quote(key, safe='')}", token, data=body)
        except Unreachable as exc:
            raise WorkerUnavailable(f"{exc} (--offline previews without a worker)") from None
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
            detail = answer.get("detail") or answer.get("error") if isinstance(answer, dict) else answer
            hint = " (export CS_RELAY_ADMIN_TOKEN in this shell)" if status == 401 else ""
            raise WorkerUnavailable(f"the worker answered {status}: {detail}{hint}")
        for index, result in zip(indexes, answer["results"], strict=True):
            results[index] = {**result, "index": index}
    return [results[i] for i in range(len(raws))]
