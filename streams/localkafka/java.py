"""The Java runtime the broker (and Maven) run on: where it is, and that it is new enough."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from streams.localkafka.errors import HINT_EXISTING, KafkaLaunchError

MIN_JAVA = 17


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise KafkaLaunchError(
            f"the local Kafka broker needs `java` ({MIN_JAVA} or newer) on PATH or in JAVA_HOME; "
            f"install a JDK (e.g. openjdk-17-jre-headless) or {HINT_EXISTING}"
        )
    return java


_java_checked: dict[str, int | None] = {}


def check_java_version(java: str) -> None:
    if java not in _java_checked:
        major = None
        try:
            out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
            found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
            if found:
                major = int(found.group(2) or 0) if found.group(1) == "1" else int(found.group(1))
        except (OSError, subprocess.SubprocessError):
            pass
        _java_checked[java] = major
    major = _java_checked[java]
    if major is not None and major < MIN_JAVA:
        raise KafkaLaunchError(
            f"Kafka 4 needs Java {MIN_JAVA} or newer but {java} is Java {major}: "
            f"install a newer JDK and put it first on PATH (or set JAVA_HOME), or {HINT_EXISTING}"
        )


def broker_command(java: str, heap: str, data_dir: Path, classpath: list[str], props: Path) -> list[str]:
    """The broker's command line: `classpath` is `-cp ...` and its system properties."""
    return [
        java,
        f"-Xmx{heap}",
        f"-Xms{_smaller(heap, '64m')}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        # Kafka logs through its own shutdown hook; log4j's would close the log first
        # ("Unable to register Log4j shutdown hook") and lose the shutdown's lines.
        "-Dlog4j2.shutdownHookEnabled=false",
        f"-Dkafka.logs.dir={data_dir}",
        *classpath,
        "kafka.Kafka",
        str(props),
    ]


def _smaller(heap: str, cap: str) -> str:
    def size(value: str) -> int:
        number, unit = int(value.rstrip("kKmMgG")), value[-1].lower()
        return number * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(unit, 1)

    return heap if size(heap) < size(cap) else cap
