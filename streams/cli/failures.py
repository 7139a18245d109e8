"""How an operator command fails: one line on standard error and exit status 2.

`CommandFailed` carries that line; `cs-relay`'s `main` prints it. `run_with_kafka` runs a
command's coroutine and turns what Kafka's clients raise when the brokers cannot be
reached or do not answer into such a line, naming the brokers and the variable that
points at them, while aiokafka's own per-attempt log lines are held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiokafka import errors as kafka_errors

from streams.kafkaconn import KafkaConnectError

BOOTSTRAP_VARIABLE = "KAFKA_BOOTSTRAP_SERVERS"


class CommandFailed(Exception):
    """A command could not do its work; the message is the one line to show."""


def kafka_failure(exc: BaseException, bootstrap: str) -> str:
    """One line for an error a Kafka client raised."""
    where = f"Kafka at {bootstrap} ({BOOTSTRAP_VARIABLE})"
    if isinstance(exc, kafka_errors.KafkaConnectionError) and "bootstrap" in str(exc).lower():
        return f"cannot reach {where}: no broker answered"
    if isinstance(exc, kafka_errors.KafkaTimeoutError):
        return f"{where} did not answer in time: {_text(exc)}"
    if isinstance(exc, kafka_errors.KafkaError):
        return f"{where}: {_text(exc)}"
    if isinstance(exc, OSError):
        return f"cannot reach {where}: {exc.strerror or exc}"
    return f"{where} did not answer in time"  # asyncio.TimeoutError


def _text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


T = TypeVar("T")


def run_with_kafka(coroutine: Coroutine[Any, Any, T], bootstrap: str) -> T:
    """`asyncio.run(coroutine)`, with Kafka's connection and timeout errors as `CommandFailed`."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)  # "Unable connect to ..." per attempt: the one line says it
    try:
        return asyncio.run(coroutine)
    except KafkaConnectError as exc:  # streams.kafkaconn.start_client's line, naming the setting (TLS, SASL)
        raise CommandFailed(str(exc)) from None
    except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
        raise CommandFailed(kafka_failure(exc, bootstrap)) from None
    finally:
        logger.setLevel(previous)
