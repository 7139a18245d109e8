"""The signature Segment's Webhooks destination puts on each request, so a receiver
written for Segment verifies cs-relay's requests unchanged: `X-Signature` is the
hex-encoded HMAC-SHA1 of the exact request body, keyed with the shared secret.

Shared by the plugin (which signs) and the mock (which verifies). Pure.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Signature"


def sign(secret: str, body: bytes) -> str:
    """The `X-Signature` value for `body` under `secret`."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest()


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether `signature` is the one `sign(secret, body)` gives (compared in constant time)."""
    if not signature:
        return False
    return hmac.compare_digest(signature.strip().lower().encode("ascii", "replace"), sign(secret, body).encode("ascii"))
