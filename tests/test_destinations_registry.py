"""Every registered destination keeps the plugin contract (streams/destinations/base.py),
so a new folder plus its registry line is all a destination needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from devtools import configdoc
from streams.destinations import FOLDERS, REGISTRY, plugin
from streams.envreader import EnvReader
from streams.settings import Settings
from streams.testing.mocks import DEMO_CREDENTIALS, worker_partner_env

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "streams" / "destinations"


def test_keys_names_and_mock_options_are_unique():
    for attribute in (lambda p: p.key, lambda p: p.name, lambda p: p.mock.option, lambda p: p.mock.port):
        values = [attribute(p) for p in REGISTRY]
        assert len(values) == len(set(values)), values
    assert len(REGISTRY) == len(FOLDERS)


@pytest.mark.parametrize("p", REGISTRY, ids=lambda p: p.key)
def test_each_folder_holds_its_contract_mock_and_tests(p):
    folder = FOLDER / p.key
    assert (folder / "CONTRACT.md").is_file()
    assert (folder / "mock.py").is_file() and p.mock.factory.startswith(f"streams.destinations.{p.key}.")
    assert list((folder / "tests").glob("test_*.py"))
    assert plugin(p.key) is p


@pytest.mark.parametrize("p", REGISTRY, ids=lambda p: p.key)
def test_disabled_without_its_variables_and_enabled_by_its_mock_env(p):
    assert not p.read_settings(EnvReader({})).enabled
    env = worker_partner_env({p.key: "http://127.0.0.1:1"}, DEMO_CREDENTIALS)
    own = p.read_settings(EnvReader(env))
    assert own.enabled and own.base_url.startswith("http://127.0.0.1:1")
    assert Settings.from_env(env).destinations[p.key].enabled


@pytest.mark.parametrize("p", REGISTRY, ids=lambda p: p.key)
def test_its_secrets_are_redacted_from_the_settings_line(p):
    env = worker_partner_env({p.key: "http://127.0.0.1:1"}, DEMO_CREDENTIALS)
    settings = Settings.from_env(env)
    secret_values = p.read_settings(EnvReader(env)).secrets()
    assert secret_values and set(secret_values) <= set(settings.secrets())
    shown = repr(settings.redacted()) + repr(settings)
    assert not [value for value in secret_values if value in shown]


@pytest.mark.parametrize("p", REGISTRY, ids=lambda p: p.key)
def test_its_mock_is_an_aiohttp_app_with_the_recording_endpoints(p):
    app = p.mock.create_app(DEMO_CREDENTIALS)
    assert isinstance(app, web.Application)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/_mock/requests", "/_mock/state", "/_mock/faults"} <= paths


def test_the_registry_and_every_plugin_import_no_faust_aiohttp_or_aiokafka():
    """The worker loads the registry; mocks (aiohttp servers) are loaded by name only."""
    code = (
        "import sys, streams.destinations, streams.settings\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('faust', 'aiohttp', 'aiokafka'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_configuration_reference_lists_every_destination_variable():
    document = configdoc.DOC.read_text()
    assert configdoc.rewritten(document, configdoc.render(REGISTRY)) == document, (
        "docs/configuration.md is out of date: run python -m devtools.configdoc"
    )
    for p in REGISTRY:
        for variable in p.variables:
            assert f"`{variable.name}`" in document
