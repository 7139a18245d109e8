"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

# The mock-server fixtures (`cs`, `csb`) for tests/test_mockservers.py and each destination's
# tests/test_mock.py: registered here once, rather than imported by name into each module.
pytest_plugins = ["tests.mockhelpers"]

# The installed pytest plugin (streams/testing/plugin.py, entry point `pytest11`) gives
# every test `partner_mocks`, `kafka_bootstrap` and `relay_pipeline`, as it gives a team's.


@pytest.fixture
async def pipeline(kafka_bootstrap, partner_mocks, tmp_path):
    """The plugin's broker and mocks and a fresh set of topics; start workers with
    `pipeline.start_worker()` (see streams/testing/pipeline.py). Everything stops at the end."""
    from tests.pipeline import REPO, Pipeline

    pipe = Pipeline(kafka_bootstrap, partner_mocks, tmp_path, cwd=REPO)
    try:
        yield pipe
    finally:
        await pipe.close()


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory):
    """A local broker with security="sasl_ssl" (TLS and a SASL login), for the tests of
    secured clients (tests/test_e2e_security.py, tests/test_e2e_check.py): one per session."""
    from streams.localkafka import KafkaLaunchError, LocalKafka

    kafka = LocalKafka(port=0, data_dir=tmp_path_factory.mktemp("kafka-sasl-ssl"), security="sasl_ssl")
    try:
        kafka.start(timeout=60)
    except KafkaLaunchError as exc:
        pytest.fail(f"cannot start the SASL_SSL broker: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.stop()


def pytest_terminal_summary(terminalreporter):
    """The figures the end-to-end tests measured (tests/figures.py), at the end of the run."""
    from tests.figures import FIGURES

    if FIGURES:
        terminalreporter.section("cs-relay figures (reported, not asserted)")
        for line in FIGURES:
            terminalreporter.write_line(line)
