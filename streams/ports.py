"""The ports `cs-relay dev` will listen on, checked before it starts anything.

A port some other program holds used to show as a 30 s wait and a traceback saying
that a mock "did not answer". `port_problem` names the first port that is taken (or
wanted twice), what wanted it and the option or variable that changes it, in one line.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Wanted:
    """A port something of `cs-relay dev` will listen on: `what` ("the ClientSuccess mock")
    and `change`, the option or variable that moves it ("--clientsuccess-port")."""

    port: int
    host: str
    what: str
    change: str


def in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails because something holds it (as a server binds:
    SO_REUSEADDR, so a closed connection's TIME_WAIT is no conflict). A host that does
    not resolve is the listener's own error to report, not a port in use."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return False
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_problem(wanted: Iterable[Wanted]) -> str | None:
    """The one line about the first port wanted twice or already in use; None if all are
    free. Port 0 (any free port) is never a problem."""
    seen: dict[int, Wanted] = {}
    for want in wanted:
        if not want.port:
            continue
        first = seen.setdefault(want.port, want)
        if first is not want:
            return (
                f"port {want.port} is wanted twice: by {first.what} ({first.change}) and by {want.what} "
                f"({want.change}): give one of them another port"
            )
    for want in seen.values():
        if in_use(want.host, want.port):
            return (
                f"port {want.port} ({want.what}) is already in use: stop what listens there "
                f"or choose another port with {want.change}"
            )
    return None
