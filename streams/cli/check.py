"""`cs-relay check`: before going live, with the production settings.

One line per check, `ok` or `FAIL`, and exit status 0 when every check passed, else 1:

* settings: every variable valid (as `cs-relay config` checks them);
* kafka: the brokers reached and logged in to with the configured security
  (`streams.kafkaconn.start_client`: a refused login or an untrusted certificate names
  the variable, a wrong protocol is named by asking the listener, `streams.kafkaprobe`);
* topics: every topic of `cs-relay topics` found, with the partition count, record
  limit and cleanup policy the worker needs (`streams.runtime.topics.survey`); nothing
  is created (`cs-relay topics --create` does that);
* one line per enabled destination: its base URL reached (TCP, and the TLS handshake
  with certificate verification for https). None of the partners' APIs has a request
  that checks credentials without recording something (each plugin's `credentials_check`
  says why), so no credential is sent; the line says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass

from yarl import URL

from streams.destinations import REGISTRY
from streams.runtime.topiclist import WORKER, topic_list
from streams.settings import Settings, SettingsError


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


KAFKA_TIMEOUT = 10.0  # seconds for each request to the brokers


async def check_kafka(settings: Settings) -> list[Result]:
    """The kafka line, and the topics line when Kafka was reached."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.cli.failures import kafka_failure
    from streams.kafkaconn import KafkaConnectError, start_client
    from streams.runtime.topics import limit_problems, partition_problem, policy_problems, survey

    where = f"{settings.kafka_bootstrap_servers} as {settings.kafka_security.protocol}"
    if settings.kafka_security.uses_sasl:
        where += f" ({settings.kafka_security.sasl_mechanism}, user {settings.kafka_security.sasl_username!r})"
    admin = AIOKafkaAdminClient(**settings.kafka_options(), request_timeout_ms=int(KAFKA_TIMEOUT * 1000))
    try:
        await start_client(admin, settings.kafka_security, settings.kafka_bootstrap_servers)
    except KafkaConnectError as exc:
        return [Result("kafka", False, str(exc))]
    except Exception as exc:  # noqa: BLE001 - unreachable: said in one line
        return [Result("kafka", False, kafka_failure(exc, settings.kafka_bootstrap_servers))]
    try:
        found = await survey(admin, settings)
    except Exception as exc:  # noqa: BLE001 - the broker went away, a request timed out
        return [Result("kafka", True, f"reached {where}"), Result("topics", False, f"cannot describe them: {exc}")]
    finally:
        await admin.close()
    names = [t.name for t in topic_list(settings)]
    # A topic only the command line uses (backfill's record) is made when first needed.
    later = [t.name for t in topic_list(settings) if WORKER not in (*t.readers, *t.writers) and t.name not in found]
    missing = [name for name in names if name not in found and name not in later]
    problems = [p for p in [partition_problem(settings, found)] if p]
    problems += limit_problems(settings, found) + policy_problems(settings, found)
    unread = {name: f.config_error for name, f in found.items() if f.config_error}
    if unread:
        problems.append(
            f"cannot read the configs of {', '.join(unread)} ({', '.join(sorted(set(unread.values())))}): "
            "this login needs DescribeConfigs on them (`cs-relay acls`)"
        )
    results = [Result("kafka", True, f"reached {where}")]
    if missing:
        problems.insert(
            0,
            f"{len(missing)} of {len(names)} missing, or hidden from this login without Describe "
            f"({', '.join(missing)}): `cs-relay topics --create`, `cs-relay acls`",
        )
    if problems:
        results.append(Result("topics", False, "; ".join(problems)))
    else:
        then = f"; {', '.join(later)}: made by the first `cs-relay backfill`" if later else ""
        results.append(
            Result(
                "topics",
                True,
                f"all {len(names) - len(later)} found with the partitions and configs cs-relay needs{then}",
            )
        )
    return results


async def reach(url: str, timeout: float) -> str | None:
    """None when `url`'s host accepts a connection (and a verified TLS handshake for
    https); else why not, in a few words."""
    parsed = URL(url)
    host, port = parsed.host or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    context = ssl.create_default_context() if parsed.scheme == "https" else None
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if context else None), timeout
        )
    except ssl.SSLCertVerificationError as exc:
        return f"its TLS certificate is not trusted: {exc.verify_message}"
    except (OSError, TimeoutError) as exc:
        return f"cannot connect to {host}:{port}: {getattr(exc, 'strerror', None) or type(exc).__name__}"
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return None


async def check_destinations(settings: Settings) -> list[Result]:
    results = []
    for plugin in REGISTRY:
        dest = settings.destinations[plugin.key]
        if not dest.enabled:
            results.append(Result(plugin.key, True, f"off ({plugin.enable_hint})"))
            continue
        shown = str(URL(dest.base_url).with_query(None).with_user(None))
        problem = await reach(dest.base_url, settings.http_timeout)
        if problem:
            results.append(Result(plugin.key, False, f"{shown}: {problem}"))
        else:
            proto = "TLS verified" if dest.base_url.startswith("https") else "plain HTTP"
            results.append(Result(plugin.key, True, f"{shown} reached ({proto}); {plugin.credentials_check}"))
    return results


async def _checks(settings: Settings, out: Callable[[str], None]) -> bool:
    from streams.kafkaconn import quiet_client_logs

    with quiet_client_logs():
        kafka = await check_kafka(settings)
    for result in kafka:
        out(result.line())
    results = await check_destinations(settings)
    for result in results:
        out(result.line())
    return all(r.ok for r in [*kafka, *results])


def run() -> int:
    errors: list[str] = []
    try:
        settings = Settings.from_env(errors=errors)
    except SettingsError as exc:
        errors.append(str(exc))
    if errors:
        for problem in errors:
            print(Result("settings", False, problem).line())
        return 1
    print(Result("settings", True, "every variable valid").line())
    passed = asyncio.run(_checks(settings, lambda line: print(line, flush=True)))
    print("ready to go live" if passed else "not ready: see the FAIL lines", file=sys.stderr)
    return 0 if passed else 1


def add_parser(sub) -> None:  # sub: argparse's subparsers action
    parser = sub.add_parser(
        "check",
        help="before going live: Kafka reached with the configured security, the topics usable, each destination "
        "reached; one line per check, exit 1 on a failure",
    )
    parser.set_defaults(run=lambda args: run())
