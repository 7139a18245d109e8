"""The worker's event loop (`CS_RELAY_EVENT_LOOP`): uvloop by default, asyncio's own
loop when asked for, or where uvloop is not installed (it has no Windows build).

`cs-relay worker` calls `select` after importing the app and before Faust's worker
creates its loop, so the setting decides even when Faust's own `FAUST_LOOP` (read when
`faust` is imported) says otherwise. `running()` names the loop a coroutine runs on:
the worker logs it at start-up and `GET /version` answers it.
"""

from __future__ import annotations

import asyncio
import logging

UVLOOP, ASYNCIO = "uvloop", "asyncio"
CHOICES = (UVLOOP, ASYNCIO)

log = logging.getLogger("cs_relay")


def select(name: str) -> str:
    """Install the event loop policy of `name` (one of CHOICES) for the loops created
    from now on; the name of the one installed (asyncio when uvloop cannot be imported)."""
    if name not in CHOICES:
        raise ValueError(f"expected one of {', '.join(CHOICES)}, got {name!r}")
    if name == UVLOOP:
        try:
            import uvloop
        except ImportError:
            log.warning("CS_RELAY_EVENT_LOOP=uvloop but uvloop is not installed: running on asyncio's own loop")
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return UVLOOP
    asyncio.set_event_loop_policy(None)  # asyncio's default policy
    return ASYNCIO


def name_of(loop: asyncio.AbstractEventLoop) -> str:
    """uvloop for a uvloop loop, else asyncio."""
    return UVLOOP if type(loop).__module__.partition(".")[0] == UVLOOP else ASYNCIO


def running() -> str:
    """The name of the loop the caller runs on ("none" outside a running loop)."""
    try:
        return name_of(asyncio.get_running_loop())
    except RuntimeError:
        return "none"
