"""The image and docker-compose.yml as operators run them: health checks, what waits for
what, ports on 127.0.0.1 only, and dependencies installed from constraints.txt, the
versions the tests ran with. `docker-compose config` must accept the file; it is run
when docker-compose is on PATH (CI has it), and the structure is checked either way."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
HEALTHY_SERVICES = ("worker", "mocks", "ingest")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_accepts_the_file(compose):
    assert set(compose["services"]) == {"kafka", "topics", "mocks", "worker", "ingest"}
    tool = shutil.which("docker-compose")
    if tool is not None:  # otherwise the YAML parse above and the structure below are the check
        result = subprocess.run(
            [tool, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, timeout=60, cwd=REPO
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("service", HEALTHY_SERVICES)
def test_services_have_a_health_check_of_their_own_port_without_curl(compose, service):
    spec = compose["services"][service]
    test = spec["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    published = [int(port.rsplit(":", 2)[-1]) for port in spec["ports"]]
    assert "http://127.0.0.1:" in test[3]
    for port in published:
        assert str(port) in test[3]
    compile(test[3], f"{service} healthcheck", "exec")  # valid Python


def test_dependents_wait_for_healthy_services(compose):
    services = compose["services"]
    assert services["worker"]["depends_on"]["mocks"] == {"condition": "service_healthy"}
    assert services["worker"]["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
    assert services["ingest"]["depends_on"]["worker"] == {"condition": "service_healthy"}
    waited_on = {
        name
        for spec in services.values()
        for name, dep in (spec.get("depends_on") or {}).items()
        if dep.get("condition") == "service_healthy"
    }
    assert waited_on <= {name for name, spec in services.items() if "healthcheck" in spec} | {"kafka"}


def test_every_published_port_is_bound_to_localhost(compose):
    published = [(name, port) for name, spec in compose["services"].items() for port in spec.get("ports", [])]
    assert {name for name, _ in published} == {"worker", "mocks", "ingest"}
    for name, port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)


def test_the_ingest_service_takes_write_keys_from_the_environment(compose):
    ingest = compose["services"]["ingest"]
    assert ingest["command"][0] == "ingest" and "0.0.0.0" in ingest["command"]
    assert ingest["environment"]["CS_RELAY_WRITE_KEYS"] == "${CS_RELAY_WRITE_KEYS:-demo-write-key}"
    assert ingest["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert ingest["ports"] == ["127.0.0.1:8088:8088"]


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_the_image_checks_the_workers_health_and_installs_the_tested_versions():
    text = dockerfile()
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", text, re.S | re.M)
    assert healthcheck and "/health" in healthcheck.group(1) and "curl" not in healthcheck.group(1)
    command = yaml.safe_load(healthcheck.group(1).replace("\\\n", ""))  # a JSON array
    assert command[:2] == ["python", "-c"]
    compile(command[2], "HEALTHCHECK", "exec")
    assert re.search(r"^RUN pip install -c constraints\.txt \. ", text, re.M)
    assert re.search(r"^COPY .*\bconstraints\.txt\b", text, re.M)


def test_ci_installs_from_the_same_constraints():
    """.ci/run runs `make test`, which installs through the $(STAMP) recipe."""
    makefile = (REPO / "Makefile").read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert re.search(r"^test: \$\(STAMP\)", makefile, re.M)
    stamp = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", makefile, re.M)
    assert stamp and "constraints.txt" in stamp.group(0).splitlines()[0]  # a new pin reinstalls
    installs = [line for line in stamp.group(1).splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned and " " not in line and "@" not in line, line
            pins[name.lower().replace("_", "-")] = pinned
    return pins


def test_constraints_pin_what_the_tests_run_with():
    pins = constraints()
    assert "cs-relay" not in pins
    for name in ("faust-streaming", "aiokafka", "aiohttp", "rocksdict", "prometheus-client", "pytest", "pyyaml"):
        assert pins[name] == version(name), name


def test_the_build_context_keeps_what_the_dockerfile_copies():
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [word for line in dockerfile().splitlines() if line.startswith("COPY ") for word in line.split()[1:-1]]
    assert {"constraints.txt", "README.md", "pyproject.toml", "streams"} <= set(copied)
    for path in copied:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), path
    for kept in ("streams/destinations/webhook/CONTRACT.md", "streams/samples/segment-sample.jsonl"):
        assert not any(fnmatch.fnmatch(kept, pattern) for pattern in ignored), kept
    assert ".venv" in ignored and ".git" in ignored
