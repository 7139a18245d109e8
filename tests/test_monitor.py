"""The worker's Faust Monitor (issue 23): Faust calls its sensors' hooks several times per
event (message in and out, stream event in and out, every table get and set, every
record sent), and its Monitor, a sensor by default, counts, times and keys each of them
for figures nothing in cs-relay reads. The app keeps its monitor off the sensors, so
Faust calls nothing of it per event, and keeps what is read (the partition end offsets
the admin's lag falls back on, the committed offsets, cleared by a rebalance)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.sensors import Monitor
from faust.types import TP

from streams.runtime.relayapp import create_app
from streams.settings import Settings

TP0 = TP("segment-events", 0)


@pytest.fixture
def app(tmp_path):
    return create_app(Settings.from_env({"CS_RELAY_DATA_DIR": str(tmp_path)}))


def test_the_monitor_is_faust_s_and_not_a_sensor_once_the_app_is_set_up(app):
    assert isinstance(app.monitor, Monitor)  # what Faust's consumer and the admin expect
    app.on_init_dependencies()  # where Faust adds the monitor to the sensors
    assert app.monitor not in set(app.sensors)
    assert list(app.sensors) == []  # nothing for Faust to call per event


def test_per_event_hooks_through_faust_s_sensor_delegate_reach_no_monitor(app):
    app.on_init_dependencies()
    monitor = app.monitor
    table = SimpleNamespace(name="users")
    stream = SimpleNamespace(task_owner=None)
    message = SimpleNamespace(time_in=None, time_out=None, time_total=None)
    for _ in range(3):
        app.sensors.on_message_in(TP0, 1, message)
        state = app.sensors.on_stream_event_in(TP0, 1, stream, object())
        app.sensors.on_table_get(table, "u1")
        app.sensors.on_table_set(table, "u1", {})
        app.sensors.on_table_del(table, "u1")
        sent = app.sensors.on_send_initiated(None, "t", object(), 1, 2)
        app.sensors.on_send_completed(None, sent, object())
        app.sensors.on_stream_event_out(TP0, 1, stream, object(), state)
        app.sensors.on_message_out(TP0, 1, message)
        app.sensors.on_topic_buffer_full(TP0)
    assert (monitor.messages_received_total, monitor.events_total, monitor.messages_sent) == (0, 0, 0)
    assert not monitor.tables and not monitor.events_runtime and not monitor.send_latency
    assert not monitor.events_by_stream and not monitor.tp_read_offsets and not monitor.stream_inbound_time
    assert message.time_in is None


def test_what_the_admin_reads_is_kept_and_a_rebalance_clears_it(app):
    app.on_init_dependencies()
    monitor = app.monitor
    monitor.track_tp_end_offset(TP0, 42)
    monitor.on_tp_commit({TP0: 40})
    assert monitor.tp_end_offsets[TP0] == 42 and monitor.tp_committed_offsets[TP0] == 40
    app.on_rebalance_start()  # a rebalance forgets them, as Faust's sensor hook did
    assert not monitor.tp_end_offsets and not monitor.tp_committed_offsets


def test_a_rebalance_logs_no_missing_sensor_state(app, caplog):
    """Faust warns "Missing sensor state for rebalance" when its sensors' rebalance
    state is empty, as it is with no sensor: the app keeps the monitor's, once per
    rebalance, so the worker's log has no such warning at every rebalance."""
    app.on_init_dependencies()
    with caplog.at_level("WARNING"):
        for _ in range(2):
            app.on_rebalance_start()
            app.on_rebalance_return()
            app.on_rebalance_end()
    assert not [r for r in caplog.records if "sensor state" in r.getMessage()]
    assert app.monitor.rebalances == 2  # the monitor still counts them
