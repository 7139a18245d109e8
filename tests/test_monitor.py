"""The worker's Faust Monitor (issue 23): Faust calls its sensor hooks several times per
event (message in and out, stream event in and out, every table get and set, every
record sent), and its default Monitor counts, times and keys each of them for figures
nothing in cs-relay reads. The app's monitor keeps what is read (the partition end
offsets the admin's lag falls back on, committed offsets, rebalance bookkeeping) and does
nothing per event."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.sensors import Monitor
from faust.types import TP

from streams.runtime.monitor import PER_EVENT_HOOKS, SlimMonitor
from streams.runtime.relayapp import create_app
from streams.settings import Settings

TP0 = TP("segment-events", 0)


@pytest.fixture
def app(tmp_path):
    return create_app(Settings.from_env({"CS_RELAY_DATA_DIR": str(tmp_path)}))


def test_the_app_runs_the_slim_monitor(app):
    assert type(app.monitor) is SlimMonitor
    assert isinstance(app.monitor, Monitor)  # what Faust and its sensors expect


def test_per_event_hooks_through_faust_s_sensor_delegate_record_nothing(app):
    app.sensors.add(app.monitor)
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


def test_every_hook_faust_calls_per_event_is_a_no_op_of_the_slim_monitor():
    for name in PER_EVENT_HOOKS:
        assert getattr(SlimMonitor, name) is not getattr(Monitor, name), name
    assert {"on_message_in", "on_stream_event_in", "on_table_get", "on_send_initiated"} <= set(PER_EVENT_HOOKS)


def test_what_the_admin_reads_is_kept(app):
    monitor = app.monitor
    monitor.track_tp_end_offset(TP0, 42)
    monitor.on_tp_commit({TP0: 40})
    assert monitor.tp_end_offsets[TP0] == 42 and monitor.tp_committed_offsets[TP0] == 40
    monitor.on_rebalance_start(SimpleNamespace(rebalancing_count=1))  # a rebalance forgets them, as Faust's does
    assert not monitor.tp_end_offsets and not monitor.tp_committed_offsets
