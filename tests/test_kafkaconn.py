"""Kafka TLS and SASL settings (streams/kafkaconn.py): reading, checking, and what each
client is given. Connecting to a real SASL_SSL broker: tests/test_e2e_security.py."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import errors
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.envreader import EnvReader, SettingsError
from streams.kafkaconn import KafkaSecurity, describe, diagnose
from streams.localkafka import generate_tls
from streams.ops.webserve import free_port
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

PASSWORD = "hunter2-very-secret"


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    generate_tls(folder, server=True)
    return folder


def security(**env: str) -> KafkaSecurity:
    return KafkaSecurity.from_env(EnvReader(env))


def sasl_ssl(**extra: str) -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": "relay",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        **extra,
    }


def test_plaintext_by_default_gives_clients_nothing_else():
    s = security()
    assert s.protocol == "PLAINTEXT" and not s.uses_ssl and not s.uses_sasl
    assert s.client_options() == {"security_protocol": "PLAINTEXT"}
    assert s.faust_credentials() is None
    assert Settings.from_env({}).kafka_options() == {
        "bootstrap_servers": "localhost:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_gives_every_aiokafka_client_tls_and_the_login(tls):
    s = security(
        **sasl_ssl(
            KAFKA_SECURITY_PROTOCOL="sasl_ssl",
            KAFKA_SASL_MECHANISM="scram-sha-512",
            KAFKA_SSL_CAFILE=str(tls / "ca.pem"),
        )
    )
    options = s.client_options()
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "relay",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "cs-relay local Kafka CA"),),)]


def test_faust_gets_the_same_options_through_its_credentials(tls):
    s = security(**sasl_ssl(KAFKA_SASL_MECHANISM="PLAIN", KAFKA_SSL_CAFILE=str(tls / "ca.pem")))
    credentials = s.faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    faust_options = dict(credentials_to_aiokafka_auth(credentials))
    ours = s.client_options()
    assert isinstance(faust_options.pop("ssl_context"), ssl.SSLContext)
    ours.pop("ssl_context")
    assert faust_options == ours

    tls_only = security(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(tls / "ca.pem"))
    credentials = tls_only.faust_credentials()
    assert isinstance(credentials, SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"

    plain_sasl = security(**sasl_ssl(KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT"))
    assert credentials_to_aiokafka_auth(plain_sasl.faust_credentials())["security_protocol"] == "SASL_PLAINTEXT"
    assert plain_sasl.client_options().get("ssl_context") is None


def test_hostname_check_can_be_turned_off_but_the_certificate_is_still_verified():
    context = security(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CHECK_HOSTNAME="false").client_options()["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_mutual_tls_loads_the_client_certificate(tls):
    s = security(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CERTFILE=str(tls / "broker.pem"),
        KAFKA_SSL_KEYFILE=str(tls / "broker.key"),
    )
    assert s.client_options()["ssl_context"] is not None


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"KAFKA_SECURITY_PROTOCOL": "TLS"},
            "KAFKA_SECURITY_PROTOCOL: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            sasl_ssl(KAFKA_SASL_MECHANISM="GSSAPI"),
            "KAFKA_SASL_MECHANISM: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: required with KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (sasl_ssl(KAFKA_SASL_USERNAME=""), "KAFKA_SASL_USERNAME: required with"),
        (sasl_ssl(KAFKA_SASL_PASSWORD=" "), "KAFKA_SASL_PASSWORD: required with"),
        (
            {"KAFKA_SASL_PASSWORD": PASSWORD},
            "KAFKA_SASL_PASSWORD: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT sends no SASL login",
        ),
        (
            {"KAFKA_SSL_CAFILE": "/etc/hostname"},
            "KAFKA_SSL_CAFILE: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS",
        ),
        (sasl_ssl(KAFKA_SSL_CAFILE="/nonexistent/ca.pem"), "KAFKA_SSL_CAFILE: no such file: /nonexistent/ca.pem"),
        (sasl_ssl(KAFKA_SSL_CAFILE="/"), "KAFKA_SSL_CAFILE: not a file: /"),
        (sasl_ssl(KAFKA_SSL_CERTFILE="/etc/hostname"), "KAFKA_SSL_KEYFILE: required with KAFKA_SSL_CERTFILE"),
        (sasl_ssl(KAFKA_SSL_KEYFILE="/etc/hostname"), "KAFKA_SSL_CERTFILE: required with KAFKA_SSL_KEYFILE"),
        (sasl_ssl(KAFKA_SSL_CHECK_HOSTNAME="perhaps"), "KAFKA_SSL_CHECK_HOSTNAME: expected true or false"),
    ],
)
def test_a_bad_setting_is_named_and_the_password_never_quoted(env, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message)
    assert PASSWORD not in str(raised.value)


def test_files_that_are_not_certificates_or_keys_are_refused(tls, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match=r"^KAFKA_SSL_CAFILE: not a PEM file of certificates"):
        security(**sasl_ssl(KAFKA_SSL_CAFILE=str(junk)))
    with pytest.raises(SettingsError, match=r"^KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE: cannot use them"):
        security(
            KAFKA_SECURITY_PROTOCOL="SSL",
            KAFKA_SSL_CERTFILE=str(tls / "broker.pem"),
            KAFKA_SSL_KEYFILE=str(tls / "ca.key"),
        )  # a key of another certificate


def test_an_unreadable_file_is_named(tmp_path):
    """Checked as an unprivileged user: root reads anything, and CI runs as root."""
    tmp_path.chmod(0o755)
    locked = tmp_path / "ca.pem"
    locked.write_text("x")
    locked.chmod(0)
    code = (
        "import sys\n"
        "from streams.envreader import EnvReader, SettingsError\n"
        "from streams.kafkaconn import KafkaSecurity\n"
        "env = dict(KAFKA_SECURITY_PROTOCOL='SSL', KAFKA_SSL_CAFILE=sys.argv[1])\n"
        "try:\n"
        "    KafkaSecurity.from_env(EnvReader(env))\n"
        "except SettingsError as exc:\n"
        "    print(exc)\n"
    )
    command = [sys.executable, "-c", code, str(locked)]
    if os.geteuid() == 0:  # drop to nobody, so that the file really is unreadable
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.startswith(f"KAFKA_SSL_CAFILE: not readable by this user: {locked}"), out.stdout + out.stderr


def test_the_password_is_a_secret_everywhere_settings_are_shown():
    settings = Settings.from_env(sasl_ssl())
    assert PASSWORD in settings.secrets()
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.redacted())
    assert settings.redacted()["kafka_security"]["sasl_password"] == "***"
    assert settings.redacted()["kafka_security"]["sasl_username"] == "relay"


def test_env_gives_back_the_variables_that_made_it(tls):
    env = sasl_ssl(
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256", KAFKA_SSL_CAFILE=str(tls / "ca.pem"), KAFKA_SSL_CHECK_HOSTNAME="false"
    )
    assert security(**env).env() == env
    assert security().env() == {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}


def test_connection_errors_name_the_setting_to_fix():
    s = security(**sasl_ssl(KAFKA_SASL_MECHANISM="SCRAM-SHA-512"))
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_code, untrusted.verify_message = 19, "self-signed certificate in certificate chain"
    assert describe(untrusted, s, "k:9093") == (
        "TLS: the broker's certificate is not trusted (KAFKA_SSL_CAFILE): self-signed certificate in certificate chain"
    )
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 62, "Hostname mismatch, certificate is not valid for 'k'."
    assert "(KAFKA_BOOTSTRAP_SERVERS / KAFKA_SSL_CHECK_HOSTNAME)" in describe(mismatch, s, "k:9093")
    refused = errors.SaslAuthenticationFailed(f"Authentication failed for password {PASSWORD}")
    line = describe(refused, s, "k:9093")
    assert line == (
        "Kafka refused the SASL login (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD): SCRAM-SHA-512 as "
        "'relay': Authentication failed for password ***"
    )
    mechanism = errors.UnsupportedSaslMechanismError("Kafka broker does not support SCRAM-SHA-512 sasl mechanism.")
    assert "does not accept KAFKA_SASL_MECHANISM=SCRAM-SHA-512" in describe(mechanism, s, "k:9093")
    assert describe(errors.KafkaConnectionError("Unable to bootstrap"), s, "k:9093") is None


async def test_diagnose_finds_no_security_problem_when_nothing_answers():
    port = free_port()
    for s in (security(), security(**sasl_ssl())):
        assert (
            await diagnose(s, f"127.0.0.1:{port}", errors.KafkaConnectionError("Unable to bootstrap"), timeout=2)
            is None
        )
