"""Kafka's jars: fetched from Maven Central once per Kafka version with
`mvn dependency:copy-dependencies` on the installed `pom.xml`, into
`<cache>/<version>/libs` (cache: `$CS_RELAY_KAFKA_CACHE` or `~/.cache/cs-relay/kafka`).

The jars land in a temporary folder renamed into place only after Maven succeeded, so
an interrupted download is never used; the folder carries a marker with a digest of the
pom, so editing the pom fetches again; a lock file serialises concurrent fetches.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from streams.localkafka.errors import HINT_EXISTING, KafkaLaunchError
from streams.localkafka.java import find_java

DEFAULT_KAFKA_VERSION = "4.0.2"
MVN_TIMEOUT = 900.0  # a first fetch is ~60 MB of jars
BUNDLED_POM = Path(__file__).resolve().parent / "pom.xml"

_MARKER = ".complete"
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+_-]*$")


def kafka_cache_dir() -> Path:
    """Where Kafka's jars are kept: `$CS_RELAY_KAFKA_CACHE` or `~/.cache/cs-relay/kafka`."""
    configured = os.environ.get("CS_RELAY_KAFKA_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.home() / ".cache" / "cs-relay" / "kafka"


def default_kafka_version() -> str:
    return check_version(os.environ.get("CS_RELAY_KAFKA_VERSION", "").strip() or DEFAULT_KAFKA_VERSION)


def kafka_pom() -> Path:
    """The Maven file that lists the broker's jars: `$CS_RELAY_KAFKA_POM` or the one
    installed with this package (`streams/localkafka/pom.xml`, package data)."""
    configured = os.environ.get("CS_RELAY_KAFKA_POM", "").strip()
    pom = Path(configured).expanduser() if configured else BUNDLED_POM
    if not pom.is_file():
        raise KafkaLaunchError(
            f"Kafka's Maven file {pom} is missing: "
            + ("fix CS_RELAY_KAFKA_POM" if configured else "reinstall cs-relay (its package data lacks it)")
            + f", or {HINT_EXISTING}"
        )
    return pom


def resolve_kafka(version: str | None = None, *, quiet: bool = True) -> Path:
    """The folder holding every jar of Kafka `version`, fetched with Maven the first time.

    Safe against interruption (a temporary folder is renamed into place only when Maven
    succeeded) and against concurrent callers (a lock file serialises the fetch).
    """
    version = check_version(version) if version else default_kafka_version()
    pom = kafka_pom()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    home = kafka_cache_dir() / version
    libs = home / "libs"
    if _complete(libs, digest):
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaLaunchError(
            "the local Kafka broker needs `mvn` (Apache Maven) on PATH to fetch Kafka from Maven Central; "
            f"install it or {HINT_EXISTING}"
        )
    find_java()  # Maven needs it too, and so will the broker: say so before a long download
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KafkaLaunchError(
            f"cannot create the Kafka cache {home}: {exc.strerror}; set CS_RELAY_KAFKA_CACHE to a writable folder"
        ) from exc
    with _file_lock(home / ".lock"):
        if _complete(libs, digest):  # another process fetched it while we waited
            return libs
        for stale in [*home.glob(".libs-*"), *home.glob(".old-*")]:  # left by an interrupted fetch
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".libs-", dir=home))
        try:
            if not quiet:
                print(
                    f"fetching Apache Kafka {version} from Maven Central into {libs} (first run only) ...",
                    file=sys.stderr,
                    flush=True,
                )
            started = time.monotonic()
            _run_maven(mvn, pom, version, tmp)
            if not list(tmp.glob("kafka_*.jar")):
                raise KafkaLaunchError(f"mvn finished but fetched no Kafka broker jar for {version}: check {pom}")
            jars = sorted(p.name for p in tmp.glob("*.jar"))
            (tmp / _MARKER).write_text(f"pom-sha256={digest}\nversion={version}\n" + "\n".join(jars) + "\n")
            old = None
            if libs.exists():  # an incomplete folder, or one from an older pom
                old = home / f".old-{os.getpid()}"
                libs.rename(old)
            tmp.rename(libs)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            if not quiet:
                print(f"fetched {len(jars)} jars in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return libs


def check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise KafkaLaunchError(
            f"{version!r} is not a Kafka version such as {DEFAULT_KAFKA_VERSION}: fix CS_RELAY_KAFKA_VERSION"
        )
    return version


def _complete(libs: Path, digest: str) -> bool:
    try:
        return (libs / _MARKER).read_text().startswith(f"pom-sha256={digest}\n")
    except OSError:
        return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_maven(mvn: str, pom: Path, version: str, out: Path) -> None:
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out}",
    ]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=MVN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaLaunchError(
            f"mvn did not finish fetching Kafka {version} within {MVN_TIMEOUT / 60:.0f} minutes: "
            "check your network or Maven proxy (~/.m2/settings.xml)"
        ) from exc
    if proc.returncode != 0:
        raise KafkaLaunchError(
            f"mvn could not fetch Kafka {version} from Maven Central (exit {proc.returncode}): "
            f"{_maven_summary(proc.stdout)}; "
            "check the version (CS_RELAY_KAFKA_VERSION), your network or ~/.m2/settings.xml"
        )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAVEN_NOISE = (
    "To see the full stack trace",
    "Re-run Maven",
    "For more information about",
    "[Help ",
    "cwiki.apache.org",
)


def _maven_summary(output: str) -> str:
    """The lines of Maven's output that say what went wrong, without its boilerplate."""
    lines = [_ANSI.sub("", line).strip() for line in output.splitlines()]
    errors = []
    for line in lines:
        if line.startswith("[ERROR]"):
            line = re.sub(r"\s*->\s*\[Help \d+\]\s*$", "", line[len("[ERROR]") :].strip())
            if line and not any(noise in line for noise in _MAVEN_NOISE):
                errors.append(line)
    picked = errors[:3] or [line for line in lines if line][-3:]
    summary = " | ".join(picked) or "no output"
    return summary if len(summary) <= 700 else summary[:700] + " ..."
