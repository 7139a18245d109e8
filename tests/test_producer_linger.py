"""The producer's linger follows where an event's routing waits (streams/runtime/relayapp.py):
through the by-user hop each event's by-user record goes through the producer before it is
routed, so it lingers briefly; with the input keyed in place only acknowledgements wait for
the producer, so it gathers longer (docs/benchmarks.md, "the producer's linger")."""

from __future__ import annotations

import pytest

from streams.runtime.relayapp import PRODUCER_LINGER, PRODUCER_LINGER_KEYED, create_app
from streams.settings import Settings


@pytest.mark.parametrize(("keyed", "linger"), [("false", PRODUCER_LINGER), ("true", PRODUCER_LINGER_KEYED)])
def test_the_linger_is_short_where_routing_waits_for_the_producer(tmp_path, keyed, linger):
    settings = Settings.from_env({"CS_RELAY_DATA_DIR": str(tmp_path), "CS_RELAY_INPUT_KEYED_BY_USER": keyed})
    app = create_app(settings)
    assert app.conf.producer_linger == linger
    assert PRODUCER_LINGER < PRODUCER_LINGER_KEYED  # the hop's records wait less
