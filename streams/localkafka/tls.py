"""The TLS material and the SASL user of a `security="sasl_ssl"` broker, made once per
data dir in `<data dir>/tls` and kept across restarts: a certificate authority
(`ca.pem`, what clients trust), the broker's certificate for 127.0.0.1 and localhost
with its key (`broker-keystore.pem`, a PEM keystore Kafka 4 reads directly) and the
SASL user's password (`sasl-password`); and the listeners that use them.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

from streams.localkafka.config import write_text
from streams.localkafka.errors import KafkaLaunchError

SASL_USER = "cs-relay"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def sasl_password(tls_dir: Path) -> str:
    return (tls_dir / "sasl-password").read_text().strip()


def prepare_sasl_ssl(tls_dir: Path, data_dir: Path, formatted: bool) -> None:
    """The certificates and the password, made once per data dir (kept across restarts)."""
    password_file = tls_dir / "sasl-password"
    if formatted and not password_file.exists():
        raise KafkaLaunchError(
            f"data dir {data_dir} was formatted without SASL users (a plaintext broker's): "
            "choose another --data-dir for --security sasl_ssl"
        )
    if not (tls_dir / "broker-keystore.pem").exists():
        generate_tls(tls_dir, server=True)
    if not password_file.exists():
        tls_dir.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o600)
        password_file.write_text(secrets.token_hex(16) + "\n")


def sasl_ssl_settings(tls_dir: Path, port: int, controller_port: int, internal_port: int) -> dict[str, str]:
    """Listeners for security="sasl_ssl": clients on SASL_SSL, the broker's own traffic
    on a PLAINTEXT loopback listener, the controller as before."""
    password = sasl_password(tls_dir)
    plain_users = f'username="{SASL_USER}" password="{password}" user_{SASL_USER}="{password}";'
    return {
        "listeners": (
            f"SASL_SSL://127.0.0.1:{port},BROKER://127.0.0.1:{internal_port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},BROKER://127.0.0.1:{internal_port}",
        "inter.broker.listener.name": "BROKER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        "listener.name.sasl_ssl.plain.sasl.jaas.config": (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users}"
        ),
        **{
            f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
            for m in SASL_MECHANISMS[1:]
        },
        # Kafka reads PEM directly: the key (PKCS#8, unencrypted) and its chain in one file.
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(tls_dir / "broker-keystore.pem"),
        "listener.name.sasl_ssl.ssl.client.auth": "none",
    }


def scram_users(tls_dir: Path) -> list[str]:
    """The storage format's arguments that write the SCRAM credentials of `SASL_USER`."""
    args: list[str] = []
    for mechanism in SASL_MECHANISMS[1:]:
        args += ["--add-scram", f"{mechanism}=[name={SASL_USER},password={sasl_password(tls_dir)}]"]
    return args


def generate_tls(folder: Path, *, server: bool) -> None:
    """A new certificate authority in `folder` (`ca.pem`, `ca.key`) and, with `server`, a
    certificate it signs for 127.0.0.1 and localhost (`broker-keystore.pem`: the
    unencrypted PKCS#8 key and the certificate chain, as Kafka's PEM keystore reads them)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise KafkaLaunchError("--security sasl_ssl needs `openssl` on PATH to make the broker's certificates")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        proc = subprocess.run(
            [openssl, *args], cwd=folder, capture_output=True, text=True, errors="replace", timeout=60
        )
        if proc.returncode != 0:
            raise KafkaLaunchError(
                f"openssl {args[0]} failed making certificates in {folder}: {proc.stderr.strip()[-300:]}"
            )

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3650",
        "-subj",
        "/CN=cs-relay local Kafka CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    if not server:
        return
    (folder / "broker.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    run(
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "broker.pem",
        "-days",
        "825",
        "-extfile",
        "broker.ext",
    )
    keystore = (
        (folder / "broker.key").read_text() + (folder / "broker.pem").read_text() + (folder / "ca.pem").read_text()
    )
    write_text(folder / "broker-keystore.pem", keystore)
