"""Test support that ships with cs-relay: every destination's imitation and the pytest
plugin (`plugin.py`, registered through the `pytest11` entry point) a team's own tests
use; docs/testing.md.

Importing this package imports nothing else: the destinations' mocks import
`streams.testing.recorder` without loading the plugin, the mock server or pytest.
"""
