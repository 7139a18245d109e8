"""Producing Segment messages to the input topic (`cs-relay send`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable

from aiokafka import AIOKafkaProducer

from streams.core.segment import InvalidMessage, parse


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


def read_lines(path: Path) -> Iterable[bytes]:
    """The non-blank lines of a JSON-lines file, as raw bytes (not validated here:
    the worker dead-letters what it cannot process)."""
    with path.open("rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield line


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


async def send_file(path: Path, bootstrap: str, topic: str, *, progress_every: int = 1000,
                    message_id_tag: str | None = None) -> int:
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    try:
        futures = []
        for line in read_lines(path):
            if message_id_tag:
                line = tag_message_id(line, message_id_tag)
            futures.append(await producer.send(topic, line, key=user_key(line)))
            sent += 1
            if sent % progress_every == 0:
                print(f"\rsent {sent}", end="", flush=True)
        for fut in futures:
            await fut
    finally:
        await producer.stop()
    tagged = f" (messageIds prefixed with {message_id_tag}-)" if message_id_tag else ""
    print(f"\rsent {sent} messages from {path} to {topic}{tagged}")
    return 0
