"""Producing Segment messages to the input topic (`cs-relay send`)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from aiokafka import AIOKafkaProducer

from streams.core.message import InvalidMessage
from streams.core.segment import parse
from streams.kafkaconn import KafkaSecurity, start_client
from streams.ops.progress import Progress


def user_key(raw: bytes) -> bytes | None:
    """The record key a producer should use: the message's user (userId, else
    anonymousId). cs-relay re-keys by user anyway, but only a keyed input topic keeps
    one user's messages in order on their way to the worker (Kafka orders records
    within a partition, not across partitions). Unparseable lines get no key; the
    worker dead-letters them."""
    try:
        return parse(raw).key.encode("utf-8")
    except InvalidMessage:
        return None


def tag_message_id(raw: bytes, tag: str) -> bytes:
    """`raw` with its messageId prefixed by `tag` ("{tag}-{messageId}"), so that a file
    sent again is new traffic to the worker's per-user dedupe instead of duplicates;
    messages that repeat a messageId within the file still repeat it. Lines that are
    not a JSON object with a string messageId are returned unchanged (byte for byte)."""
    try:
        message = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(message, dict) or not isinstance(message.get("messageId"), str):
        return raw
    message["messageId"] = f"{tag}-{message['messageId']}"
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (escaped in the line): the worker dead-letters it
        return raw


# Records produced but not yet acknowledged, at most: what bounds `send`'s memory
# whatever the file's size (the file itself is read a line at a time).
IN_FLIGHT = 5000


def _producer(bootstrap: str, security: KafkaSecurity) -> AIOKafkaProducer:
    """The one place `cs-relay send` builds its Kafka client."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **security.client_options())


def read_lines(handle: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """The non-blank lines of an open JSON-lines file, as raw bytes (not validated here:
    the worker dead-letters what it cannot process), each with how many bytes of the
    file were read so far. One line at a time: a file of any size."""
    offset = 0
    for line in handle:
        offset += len(line)
        line = line.strip()
        if line:
            yield line, offset


async def send_file(
    path: Path,
    bootstrap: str,
    topic: str,
    *,
    message_id_tag: str | None = None,
    in_flight: int = IN_FLIGHT,
    progress: Progress | None = None,
    out: TextIO | None = None,
    security: KafkaSecurity | None = None,
) -> int:
    """Produce every line of `path` to `topic`, keyed by user, with at most `in_flight`
    records unacknowledged; progress on standard error, the summary on `out`. A record
    Kafka refuses raises (the caller says so in one line)."""
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    progress = progress or Progress("sent", total=path.stat().st_size)
    security = security or KafkaSecurity()
    producer = _producer(bootstrap, security)
    acknowledged = 0
    pending: deque[asyncio.Future] = deque()
    try:
        await start_client(producer, security, bootstrap)  # a TLS or SASL refusal: one line naming the setting
        with path.open("rb") as handle:
            for line, offset in read_lines(handle):
                if message_id_tag:
                    line = tag_message_id(line, message_id_tag)
                pending.append(await producer.send(topic, line, key=user_key(line)))
                while pending and (len(pending) >= in_flight or pending[0].done()):
                    await pending.popleft()
                    acknowledged += 1
                progress.update(acknowledged, offset)
            while pending:
                await pending.popleft()
                acknowledged += 1
                progress.update(acknowledged)
    finally:
        await producer.stop()
        for future in pending:  # not awaited after a failure: keep asyncio from warning about them
            if future.done() and not future.cancelled():
                future.exception()
    progress.finish()
    tagged = f" (messageIds prefixed with {message_id_tag}-)" if message_id_tag else ""
    noun = "message" if acknowledged == 1 else "messages"
    print(f"sent {acknowledged} {noun} from {path} to {topic}{tagged}", file=out or sys.stdout)
    return 0
