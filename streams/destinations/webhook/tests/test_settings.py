"""The webhook's settings: what enables it, and every start-up error naming its variable
without quoting a secret."""

from __future__ import annotations

import json

import pytest

from streams.destinations.webhook import PLUGIN
from streams.destinations.webhook.settings import WebhookSettings
from streams.envreader import EnvReader, SettingsError
from streams.settings import Settings

URL = "https://hooks.example.com/segment"
HEADER_SECRET = "header-value-that-must-not-leak"


def read(env: dict[str, str]) -> WebhookSettings:
    return PLUGIN.read_settings(EnvReader(env))


def test_disabled_until_webhook_url_is_set():
    assert not read({}).enabled
    assert not read({"WEBHOOK_URL": "  "}).enabled  # blank counts as unset
    assert not read({"WEBHOOK_SHARED_SECRET": "s", "WEBHOOK_HEADERS": '{"X-A": "b"}'}).enabled


def test_defaults_with_only_the_url():
    settings = read({"WEBHOOK_URL": URL})
    assert settings.enabled
    assert settings.base_url == URL
    assert not settings.shared_secret
    assert settings.headers == ()
    assert settings.wait_for_group is False
    assert settings.rate_limit == 0.0
    assert settings.secrets() == []


def test_every_variable_is_read():
    settings = read(
        {
            "WEBHOOK_URL": "http://127.0.0.1:8083/webhook?tenant=t1",
            "WEBHOOK_SHARED_SECRET": "s3cret",
            "WEBHOOK_HEADERS": json.dumps({"Authorization": "Bearer abc", "X-Tenant": "t1"}),
            "WEBHOOK_WAIT_FOR_GROUP": "true",
            "CS_RELAY_WEBHOOK_RATE_LIMIT": "7.5",
        }
    )
    assert settings.base_url == "http://127.0.0.1:8083/webhook?tenant=t1"
    assert settings.shared_secret.reveal() == "s3cret"
    assert [(name, value.reveal()) for name, value in settings.headers] == [
        ("Authorization", "Bearer abc"),
        ("X-Tenant", "t1"),
    ]
    assert settings.wait_for_group is True
    assert settings.rate_limit == 7.5


@pytest.mark.parametrize(
    "text, expected",
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_wait_for_group_flag(text, expected):
    assert read({"WEBHOOK_URL": URL, "WEBHOOK_WAIT_FOR_GROUP": text}).wait_for_group is expected


def test_a_bad_wait_for_group_names_the_variable():
    with pytest.raises(SettingsError, match=r"^WEBHOOK_WAIT_FOR_GROUP: expected true or false"):
        read({"WEBHOOK_URL": URL, "WEBHOOK_WAIT_FOR_GROUP": "sometimes"})


@pytest.mark.parametrize(
    "url, problem",
    [
        ("hooks.example.com/segment", "expected an http:// or https:// URL"),
        ("ftp://hooks.example.com/", "expected an http:// or https:// URL"),
        ("https://", "expected an http:// or https:// URL"),
        ("https://hooks.example.com:port/", "not a valid URL"),
        ("https://hooks.example.com/a b", "holds a space or a control character"),
    ],
)
def test_a_bad_url_names_the_variable(url, problem):
    with pytest.raises(SettingsError, match=rf"^WEBHOOK_URL: {problem}"):
        read({"WEBHOOK_URL": url})


def test_a_url_with_credentials_is_refused_without_quoting_them():
    with pytest.raises(SettingsError, match="^WEBHOOK_URL: credentials do not belong") as caught:
        read({"WEBHOOK_URL": "https://user:pa55word@hooks.example.com/"})
    assert "pa55word" not in str(caught.value)
    assert "WEBHOOK_HEADERS" in str(caught.value)  # where they go instead


@pytest.mark.parametrize(
    "headers, problem",
    [
        ('{"X-Key": ', "not valid JSON at character"),
        ("X-Key: abc", "not valid JSON at character 1"),
        ('["X-Key", "abc"]', "expected a JSON object of header name to value, not an array"),
        ('"X-Key"', "expected a JSON object of header name to value, not a string"),
        ('{"X-Key": 1}', "the value of X-Key must be a string, not a number"),
        ('{"X-Key": null}', "the value of X-Key must be a string, not null"),
        ('{"X-Key": true}', "the value of X-Key must be a string, not a boolean"),
        ('{"X-Key": {"a": "b"}}', "the value of X-Key must be a string, not an object"),
        ('{"X Key": "abc"}', "'X Key' is not a valid header name"),
        ('{"X-Key:": "abc"}', "'X-Key:' is not a valid header name"),
        ('{"": "abc"}', "'' is not a valid header name"),
        ('{"Käse": "abc"}', "'Käse' is not a valid header name"),
        ('{"X-Key": "a\\r\\nX-Evil: 1"}', "the value of X-Key holds a line break"),
        ('{"X-Key": "a", "x-key": "b"}', "x-key is given more than once"),
        ('{"Content-Type": "text/plain"}', "Content-Type is set by cs-relay and cannot be overridden"),
        ('{"x-signature": "forged"}', "x-signature is set by cs-relay and cannot be overridden"),
        ('{"User-Agent": "other"}', "User-Agent is set by cs-relay"),
        ('{"Content-Length": "3"}', "Content-Length is set by cs-relay"),
    ],
)
def test_bad_headers_name_the_variable(headers, problem):
    with pytest.raises(SettingsError) as caught:
        read({"WEBHOOK_URL": URL, "WEBHOOK_HEADERS": headers})
    assert str(caught.value).startswith("WEBHOOK_HEADERS: ")
    assert problem in str(caught.value)


def test_header_errors_never_quote_a_value():
    for headers in (
        {"X-Ok": HEADER_SECRET, "X-Bad": 5},
        {"X-Bad": HEADER_SECRET + "\n"},
        {"X-Ok": HEADER_SECRET, "Content-Type": "x"},
    ):
        with pytest.raises(SettingsError) as caught:
            read({"WEBHOOK_URL": URL, "WEBHOOK_HEADERS": json.dumps(headers)})
        assert HEADER_SECRET not in str(caught.value)
    with pytest.raises(SettingsError) as caught:  # broken JSON: not even a piece of it
        read({"WEBHOOK_URL": URL, "WEBHOOK_HEADERS": '{"X-Key": "' + HEADER_SECRET})
    assert HEADER_SECRET not in str(caught.value)


def test_an_empty_headers_object_is_no_headers():
    assert read({"WEBHOOK_URL": URL, "WEBHOOK_HEADERS": "{}"}).headers == ()


def test_secrets_are_the_shared_secret_and_the_header_values():
    settings = read(
        {
            "WEBHOOK_URL": URL,
            "WEBHOOK_SHARED_SECRET": "s3cret",
            "WEBHOOK_HEADERS": json.dumps({"Authorization": "Bearer " + HEADER_SECRET, "X-Empty": ""}),
        }
    )
    assert settings.secrets() == ["s3cret", "Bearer " + HEADER_SECRET]


def test_secrets_never_show_in_the_worker_settings_line():
    env = {
        "WEBHOOK_URL": URL,
        "WEBHOOK_SHARED_SECRET": "s3cret-value",
        "WEBHOOK_HEADERS": json.dumps({"X-Api-Key": HEADER_SECRET}),
    }
    settings = Settings.from_env(env)
    own = settings.destinations["webhook"]
    assert isinstance(own, WebhookSettings)
    assert own.enabled and own.headers[0][0] == "X-Api-Key"
    shown = repr(settings.redacted()) + repr(settings) + str(settings)
    assert HEADER_SECRET not in shown and "s3cret-value" not in shown
    assert {HEADER_SECRET, "s3cret-value"} <= set(settings.secrets())


def test_a_bad_variable_stops_the_worker_settings_too():
    with pytest.raises(SettingsError, match="^WEBHOOK_HEADERS: "):
        Settings.from_env({"WEBHOOK_URL": URL, "WEBHOOK_HEADERS": "[]"})
