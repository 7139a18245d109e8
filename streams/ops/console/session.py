"""The console's login, session cookie and CSRF tokens.

An operator logs in with the admin token (CS_RELAY_ADMIN_TOKEN), typed into a form and
POSTed: never in a URL. The answer sets a session cookie, `cs_relay_console`, that is
HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), scoped
to `/console`, Secure behind HTTPS, and signed: `payload.signature`, the payload
(expiry and a random session id, base64 JSON) signed with HMAC-SHA256 under a key
derived from the token. No state is kept on the worker, so every worker with the same
token accepts it (a page forwarded to the worker that owns a user keeps the session),
and changing the token ends every session.

Every form that changes something carries a CSRF token: an HMAC of the session id
under the same key, checked in constant time.

Guessing the token is throttled per client (`LoginThrottle`, by the connection's
address; an IPv6 client by its /64 network, which one host commonly holds whole):
after LOGIN_FREE_ATTEMPTS wrong tokens a client waits before its next try,
1 s and then twice as long after each further wrong one, up to LOGIN_MAX_WAIT; while it
waits every login of that client is refused (429 with Retry-After), the right token
too. A right token clears the count; a client quiet for LOGIN_FORGET_AFTER is
forgotten. Behind a proxy every browser has the proxy's address and shares one count.

A page forwarded by another worker (the user's owner is elsewhere) carries the admin
token and the browser's session id (SESSION_HEADER), never the browser's cookie:
`Sessions.forwarded` reads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "cs_relay_console"
COOKIE_PATH = "/console"
SESSION_SECONDS = 12 * 3600
_KEY_LABEL = b"cs-relay console session v1"
# Sent by a worker that forwards a console page to the user's owner, with the admin token.
SESSION_HEADER = "X-CS-Relay-Console-Session"
LOGIN_FREE_ATTEMPTS = 5
LOGIN_FIRST_WAIT = 1.0
LOGIN_MAX_WAIT = 300.0
LOGIN_FORGET_AFTER = 900.0
LOGIN_MAX_CLIENTS = 10_000


def session_key(token: str) -> bytes:
    """The signing key: derived from the admin token, never the token itself."""
    return hmac.new(token.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    sid: str
    expires: float


class Sessions:
    def __init__(
        self, token: str, *, clock: Callable[[], float] = time.time, lifetime: float = SESSION_SECONDS
    ) -> None:
        self._token = token
        self._key = session_key(token) if token else b""
        self.clock = clock
        self.lifetime = lifetime

    @property
    def enabled(self) -> bool:
        """The console is off unless an admin token is set."""
        return bool(self._token)

    def token_matches(self, given: str) -> bool:
        """Whether `given` is the admin token (hashed first: constant time whatever the
        length of the guess)."""
        if not self.enabled:
            return False
        digest = lambda text: hashlib.sha256(text.encode("utf-8")).digest()  # noqa: E731
        return hmac.compare_digest(digest(given.strip()), digest(self._token))

    def forwarded(self, authorization: str | None, sid: str | None) -> Session | None:
        """The session a peer worker forwards a page for: its Authorization must carry
        the admin token; the session id is the browser's (its CSRF token goes in the
        forms). None without either."""
        scheme, _, given = (authorization or "").strip().partition(" ")
        if not sid or scheme.lower() != "bearer" or not self.token_matches(given):
            return None
        return Session(sid, self.clock() + self.lifetime)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self) -> tuple[str, Session]:
        """A new session and its cookie value."""
        session = Session(secrets.token_urlsafe(16), self.clock() + self.lifetime)
        payload = _b64(json.dumps({"sid": session.sid, "exp": int(session.expires)}).encode())
        return f"{payload}.{self._sign(payload)}", session

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None: missing, malformed, forged (bad
        signature), or expired."""
        if not self.enabled or not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        try:
            if not hmac.compare_digest(signature.encode("ascii"), self._sign(payload).encode("ascii")):
                return None
            data = json.loads(_unb64(payload))
            session = Session(str(data["sid"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
            return None
        return session if session.expires > self.clock() and session.sid else None

    def csrf(self, session: Session) -> str:
        return _b64(hmac.new(self._key, b"csrf:" + session.sid.encode(), hashlib.sha256).digest())

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode("utf-8", "replace"), self.csrf(session).encode())

    @staticmethod
    def cookie_header(value: str, *, max_age: int, secure: bool) -> str:
        parts = [f"{COOKIE}={value}", f"Path={COOKIE_PATH}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
        if secure:
            parts.append("Secure")
        return "; ".join(parts)


def client_of(remote: str | None) -> str:
    """What the login throttle counts by: an IPv4 address, or an IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass
class _Client:
    failures: int
    until: float  # no login before this time
    last: float  # the last wrong token


class LoginThrottle:
    """Wrong admin tokens counted per client, bounded to `max_clients` (the oldest
    forgotten first). See the module's notes."""

    def __init__(self, *, clock: Callable[[], float] = time.time, max_clients: int = LOGIN_MAX_CLIENTS) -> None:
        self.clock = clock
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def __contains__(self, client: str) -> bool:
        return client in self._clients

    def wait(self, client: str) -> float:
        """Seconds `client` must wait before it may try a token (0: now)."""
        now = self.clock()
        record = self._clients.get(client)
        if record is None:
            return 0.0
        if now - max(record.until, record.last) >= LOGIN_FORGET_AFTER:
            del self._clients[client]
            return 0.0
        return max(0.0, record.until - now)

    def failed(self, client: str) -> None:
        now = self.clock()
        record = self._clients.pop(client, None) or _Client(0, now, now)
        record.failures += 1
        record.last = now
        beyond = record.failures - LOGIN_FREE_ATTEMPTS
        if beyond >= 0:
            record.until = now + min(LOGIN_MAX_WAIT, LOGIN_FIRST_WAIT * 2 ** min(beyond, 32))
        self._clients[client] = record  # the most recent last
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
