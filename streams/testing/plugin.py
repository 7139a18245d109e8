"""The pytest plugin installed with cs-relay (entry point `pytest11`: `cs_relay`), for a
team's own tests (docs/testing.md) and the project's:

- `partner_mocks`: every registered destination's mock, running in-process on free
  ports for the whole session and reset before each test (`PartnerMocks`: `url()`,
  `requests()`, `state()`, `fault()`). `partner_mock_credentials` (session; override it
  in a conftest.py) says which credentials they accept: the demo ones by default.
- `kafka_bootstrap` (session): a broker's "host:port": `$KAFKA_BOOTSTRAP_SERVERS` when
  set (waited for up to 60 s), otherwise a local Apache Kafka broker (streams/localkafka/)
  started on a free port for the session.
- `relay_pipeline` (opt-in: only a test that names it starts anything): a `Pipeline` of
  its own topics on that broker with one worker running and ready, pointed at
  `partner_mocks`. Needs pytest-asyncio (its clients are aiokafka's).

Loaded by every pytest run where cs-relay is installed, so it imports only pytest here;
the rest is imported by the fixtures that need it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from streams.testing.partners import PartnerMocks
    from streams.testing.pipeline import Pipeline

KAFKA_WAIT = 60.0  # for an existing broker to answer
KAFKA_START = 120.0  # for the local one to start (a first run also fetches its jars)


@pytest.fixture(scope="session")
def partner_mock_credentials() -> dict[str, str]:
    """The credentials the mocks accept, by the worker's variable names
    (`CLIENTSUCCESS_API_KEY`, `CSB_API_KEY`, ...): the demo ones where absent."""
    return {}


@pytest.fixture(scope="session")
def cs_relay_mock_servers(partner_mock_credentials: dict[str, str]) -> Iterator[PartnerMocks]:
    """The mocks of the whole session (`partner_mocks` resets them for each test)."""
    from streams.testing.partners import PartnerMocks

    with PartnerMocks(partner_mock_credentials) as mocks:
        yield mocks


@pytest.fixture
def partner_mocks(cs_relay_mock_servers: PartnerMocks) -> PartnerMocks:
    """Every destination's mock, with no request recorded, no state and no fault."""
    cs_relay_mock_servers.reset()
    return cs_relay_mock_servers


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker that answers: `$KAFKA_BOOTSTRAP_SERVERS`, else a local one for the session."""
    import asyncio
    import concurrent.futures

    from streams.localkafka import KafkaLaunchError, LocalKafka, wait_until_ready
    from streams.settings import Settings

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # whether or not a loop runs here
            try:
                security = Settings.from_env().kafka_security  # a secured broker's KAFKA_SECURITY_PROTOCOL ...
                pool.submit(asyncio.run, wait_until_ready(external, KAFKA_WAIT, security)).result()
            except KafkaLaunchError as exc:
                pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={external}: {exc}", pytrace=False)
        yield external
        return

    kafka = LocalKafka(port=0, data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        kafka.start(timeout=KAFKA_START)
    except KafkaLaunchError as exc:
        pytest.fail(f"cannot start the local Kafka broker for the tests: {exc}", pytrace=False)
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


def _needs_pytest_asyncio() -> Any:
    pytest.fail("the relay_pipeline fixture needs pytest-asyncio: pip install pytest-asyncio", pytrace=False)


async def _relay_pipeline(kafka_bootstrap: str, partner_mocks: PartnerMocks, tmp_path: Path) -> AsyncIterator[Pipeline]:
    """Topics of its own, one worker running and ready, pointed at `partner_mocks`."""
    from streams.testing.pipeline import Pipeline

    pipeline = Pipeline(kafka_bootstrap, partner_mocks, tmp_path)
    try:
        await pipeline.wait_ready(pipeline.start_worker())
        yield pipeline
    finally:
        await pipeline.close()


relay_pipeline: Any  # a fixture either way: the pipeline, or a failure saying what it needs
try:
    import pytest_asyncio
except ImportError:  # the whole pipeline needs it; the mocks do not
    relay_pipeline = pytest.fixture(_needs_pytest_asyncio, name="relay_pipeline")
else:
    relay_pipeline = pytest_asyncio.fixture(_relay_pipeline, name="relay_pipeline")
