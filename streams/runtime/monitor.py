"""The worker's Faust Monitor: Faust's, without its per-event bookkeeping.

Faust calls its sensors' hooks several times for every event: a message in and out, a
stream event in and out, every table get, set and delete, every record sent and its
acknowledgement. Its default Monitor counts each (per topic, per stream, per task, per
table), reads the clock and keeps latency deques, for figures shown by Faust's web pages
(all switched off on a worker: `streams.ops.admin.FAUST_PAGES_OFF`) and its metrics
sensors (not installed). Nothing in cs-relay reads them: `/status`, `/metrics` and the
console take their figures from the runtime (`streams.ops.observe`), and the admin's lag
reads only `tp_end_offsets` from the monitor. So those hooks do nothing here; what is
not per event (end and committed offsets, commits, rebalances, assignments, web
requests) is Faust's as it is. The app takes it through Faust's `Monitor` setting
(`streams.runtime.relayapp.create_app`).
"""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor

# The hooks Faust calls per event or per record: SlimMonitor's do nothing.
PER_EVENT_HOOKS = (
    "on_message_in",
    "on_stream_event_in",
    "on_stream_event_out",
    "on_message_out",
    "on_topic_buffer_full",
    "on_table_get",
    "on_table_set",
    "on_table_del",
    "on_send_initiated",
    "on_send_completed",
)


def _record_nothing(self: Monitor, *args: Any, **kwargs: Any) -> None:
    """What each of PER_EVENT_HOOKS records: nothing (module docstring)."""


class SlimMonitor(Monitor):
    """Faust's Monitor, minus the work it does per event (module docstring)."""

    on_message_in = on_stream_event_in = on_stream_event_out = on_message_out = _record_nothing
    on_topic_buffer_full = on_table_get = on_table_set = on_table_del = _record_nothing
    on_send_initiated = on_send_completed = _record_nothing
