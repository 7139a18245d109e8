"""The worker's Faust Monitor: Faust's, kept off the per-event sensor hooks.

Faust calls every sensor in `app.sensors` several times for every event: a message in
and out, a stream event in and out, every table get, set and delete, every record sent
and its acknowledgement. Its Monitor is one of them (added at start-up, in
`App.on_init_dependencies`): it counts each (per topic, per stream, per task, per
table), reads the clock and keeps latency deques, for figures shown by Faust's web pages
(all switched off on a worker: `streams.ops.admin.FAUST_PAGES_OFF`) and its metrics
sensors (not installed). Nothing in cs-relay reads them: `/status`, `/metrics` and the
console take their figures from the runtime (`streams.ops.observe`).

So the monitor is not a sensor here (`MonitorOffTheSensors`, mixed into the app class):
with no sensor, Faust's delegate has nothing to call per event. What is read of it
stays, as Faust keeps it: Faust's consumer writes the partition end offsets and the
committed offsets to `app.monitor` directly (`track_tp_end_offset`, `on_tp_commit`;
the admin's lag falls back on the end offsets), and a rebalance clears them
(`on_rebalance_start`, called here as the sensor delegate did). The Monitor is not
started either: its sampler computes rates nothing reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust


class MonitorOffTheSensors(faust.App):
    """A Faust app whose monitor is not among its sensors (module docstring)."""

    def on_init_dependencies(self) -> Iterable[Any]:
        services = super().on_init_dependencies()
        if self.monitor in set(self.sensors):
            self.sensors.remove(self.monitor)
        return services

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        # Forgets the end and committed offsets. Its state stands in for the sensors'
        # (none here): Faust warns "Missing sensor state for rebalance" when that is empty.
        self._rebalancing_sensor_state = {self.monitor: self.monitor.on_rebalance_start(self)}

    def on_rebalance_return(self) -> None:
        state = self._rebalancing_sensor_state
        super().on_rebalance_return()
        if state:
            self.monitor.on_rebalance_return(self, state[self.monitor])

    def on_rebalance_end(self) -> None:
        state = self._rebalancing_sensor_state
        super().on_rebalance_end()
        if state:
            self.monitor.on_rebalance_end(self, state[self.monitor])
