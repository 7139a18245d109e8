"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest

# The mock-server fixtures (`cs`, `csb`) for tests/test_mockservers.py and each destination's
# tests/test_mock.py: registered here once, rather than imported by name into each module.
pytest_plugins = ["tests.mockhelpers"]

# ---------------------------------------------------------------------------------------
# Kafka broker for end-to-end tests (see streams/kafka_local.py).
#
# `kafka_bootstrap` (session scope) is the "host:port" of a broker that answers:
#   - $KAFKA_BOOTSTRAP_SERVERS when set (an existing broker; waited for up to 60 s);
#   - otherwise one local Apache Kafka broker (KRaft, from the Maven Central jars in the
#     shared cache) started on a free port for the whole session and stopped at its end.
# Its logs are in the session's temp dir (the error message names them).
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    import asyncio
    import concurrent.futures

    from devtools.kafka_local import KafkaLaunchError, LocalKafka, wait_until_ready
    from streams.settings import Settings

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # whether or not a loop runs here
            try:
                security = Settings.from_env().kafka_security  # a secured broker's KAFKA_SECURITY_PROTOCOL ...
                pool.submit(asyncio.run, wait_until_ready(external, 60, security)).result()
            except KafkaLaunchError as exc:
                pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={external}: {exc}", pytrace=False)
        yield external
        return

    kafka = LocalKafka(port=0, data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        kafka.start(timeout=120)
    except KafkaLaunchError as exc:
        pytest.fail(f"cannot start the local Kafka broker for the tests: {exc}", pytrace=False)
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


# --------------------------------------------------------------------- end of Kafka broker


@pytest.fixture
async def pipeline(kafka_bootstrap, tmp_path):
    """Mock partners on free ports and a fresh set of topics; start workers with
    `pipeline.start_worker()` (see tests/pipeline.py). Everything stops at the end."""
    from tests.pipeline import open_pipeline

    pipe = await open_pipeline(kafka_bootstrap, tmp_path)
    try:
        yield pipe
    finally:
        await pipe.close()


def pytest_terminal_summary(terminalreporter):
    """The figures the end-to-end tests measured (tests/figures.py), at the end of the run."""
    from tests.figures import FIGURES

    if FIGURES:
        terminalreporter.section("cs-relay figures (reported, not asserted)")
        for line in FIGURES:
            terminalreporter.write_line(line)
