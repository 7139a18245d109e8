"""The ClientSuccess plugin: its settings (read through EnvReader) and its credentials."""

from __future__ import annotations

import pytest

from streams.core.decision import PartnerRequest
from streams.destinations.clientsuccess import PLUGIN
from streams.destinations.clientsuccess.settings import PRODUCTION_URL, ClientSuccessSettings
from streams.envreader import EnvReader, SettingsError

KEY = "cs-key-that-must-not-leak"
FULL = {"CLIENTSUCCESS_SOURCE_ID": "src-1", "CLIENTSUCCESS_API_KEY": KEY}


def read(env: dict[str, str]) -> ClientSuccessSettings:
    return PLUGIN.read_settings(EnvReader(env))


def test_read_settings_is_from_env():
    assert PLUGIN.read_settings == ClientSuccessSettings.from_env


def test_enabled_with_source_id_and_api_key_and_production_url_by_default():
    settings = read(FULL)
    assert settings.enabled
    assert (settings.source_id, settings.api_key.reveal()) == ("src-1", KEY)
    assert settings.base_url == PRODUCTION_URL == "https://usage.clientsuccess.com"
    assert settings.rate_limit == 0.0


@pytest.mark.parametrize("missing", sorted(FULL))
def test_disabled_without_any_one_required_variable(missing):
    env = {name: value for name, value in FULL.items() if name != missing}
    assert not read(env).enabled
    assert not read({**env, missing: "   "}).enabled  # blank counts as unset


def test_disabled_with_nothing_set():
    assert not read({}).enabled


def test_base_url_and_rate_limit_are_read():
    settings = read(
        {**FULL, "CLIENTSUCCESS_BASE_URL": "http://localhost:8081", "CS_RELAY_CLIENTSUCCESS_RATE_LIMIT": "2.5"}
    )
    assert (settings.base_url, settings.rate_limit) == ("http://localhost:8081", 2.5)


@pytest.mark.parametrize("url", ["usage.clientsuccess.com", "ftp://usage.clientsuccess.com", "https://user:pw@host"])
def test_a_bad_base_url_raises_naming_the_variable(url):
    with pytest.raises(SettingsError, match="CLIENTSUCCESS_BASE_URL"):
        read({**FULL, "CLIENTSUCCESS_BASE_URL": url})


@pytest.mark.parametrize("rate", ["fast", "-1"])
def test_a_bad_rate_limit_raises_naming_the_variable(rate):
    with pytest.raises(SettingsError, match="CS_RELAY_CLIENTSUCCESS_RATE_LIMIT"):
        read({**FULL, "CS_RELAY_CLIENTSUCCESS_RATE_LIMIT": rate})


def test_secrets_are_the_api_key_and_only_when_set():
    assert read(FULL).secrets() == [KEY]
    assert read({"CLIENTSUCCESS_SOURCE_ID": "src-1"}).secrets() == []
    assert [v.name for v in PLUGIN.variables if v.secret] == ["CLIENTSUCCESS_API_KEY"]


def test_repr_and_str_hide_the_api_key():
    settings = read(FULL)
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert "src-1" in repr(settings)  # the rest stays visible


def test_credentials_are_the_api_key_query_parameter_and_no_header():
    settings = read(FULL)
    request = PartnerRequest("POST", "/collector/1.0.0/projects/src-1/events/E", {"value": 1})
    attached = PLUGIN.credentials(settings)
    assert dict(attached.query) == {"api_key": KEY}
    assert dict(attached.headers) == {} and attached.sign is None
    assert attached.headers_for(b'{"value":1}') == {}
    assert KEY not in repr(attached)
    assert "api_key" not in request.query  # the request itself never holds the key
