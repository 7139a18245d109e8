"""The destinations cs-relay delivers to: one folder each, one line each below.

Everything that concerns every destination (settings, the runtime's clients and
decisions, `cs-relay mocks`, `cs-relay dev`, the test harness, the benchmark, the
configuration reference) iterates over `REGISTRY`; see `base.Plugin`.
"""

from __future__ import annotations

import importlib

from streams.destinations.base import Plugin

# The folders below streams/destinations/, in delivery order; each exports PLUGIN.
FOLDERS = (
    "clientsuccess",
    "customersuccessbox",
    "webhook",
)
REGISTRY: tuple[Plugin, ...] = tuple(importlib.import_module(f"{__name__}.{folder}").PLUGIN for folder in FOLDERS)


def plugin(key: str) -> Plugin:
    """The registered destination `key` (KeyError for an unknown one)."""
    for candidate in REGISTRY:
        if candidate.key == key:
            return candidate
    raise KeyError(key)
