"""The pytest plugin as a team gets it: cs-relay installed (not editable) into a fresh
virtualenv, pytest run from a folder outside the checkout with no PYTHONPATH and no
conftest, on docs/testing.md's examples (`partner_mocks`, and `relay_pipeline` on this
session's broker).

The fresh virtualenv borrows the dependencies (aiohttp, faust, pytest, ...) from this
one through a `.pth` file, so only cs-relay itself is installed (`pip install
--no-deps`, by this virtualenv's pip: the fresh one has none) and the test stays well under a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")

DOC = REPO / "docs" / "testing.md"

# What the team adds besides docs/testing.md's examples: the package under test is the
# installed one, and the mocks are clean at the start of each test.
TEAM_CHECKS = """
from pathlib import Path

import pytest


def test_each_test_starts_with_clean_mocks(partner_mocks):
    assert all(partner_mocks.requests(key) == [] for key in partner_mocks.urls)
    assert partner_mocks.state("clientsuccess") == {"organizations": {}}


def test_the_installed_package_is_the_one_under_test():
    import streams
    from streams.localkafka import kafka_pom

    venv = (Path(__file__).parent / "venv").resolve()
    assert Path(streams.__file__).resolve().is_relative_to(venv)
    assert kafka_pom().is_file() and kafka_pom().is_relative_to(Path(streams.__file__).parent)
"""
TEAM_SETTINGS = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"


def doc_example(name: str) -> str:
    """The python block under `<!-- example: name -->` in docs/testing.md."""
    text = DOC.read_text()
    after = text.split(f"<!-- example: {name} -->\n", 1)[1]
    assert after.startswith("```python\n"), f"docs/testing.md: no python block under the {name} example"
    return after[len("```python\n") :].split("```", 1)[0]


@pytest.mark.e2e
def test_a_team_runs_the_documented_examples_with_the_installed_package(tmp_path: Path, kafka_bootstrap: str) -> None:
    source = tmp_path / "cs-relay-source"
    shutil.copytree(REPO, source, ignore=SKIP)
    team = tmp_path / "team"
    team.mkdir()
    venv.create(team / "venv")  # without pip of its own (ensurepip takes seconds): this one's installs into it
    python = team / "venv" / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This virtualenv's dependencies, after the fresh one's own site-packages.
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
        + ["--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    shutil.rmtree(source)  # nothing of the checkout is left to import from
    (team / "test_our_calls.py").write_text(doc_example("partner_mocks"))
    (team / "test_our_pipeline.py").write_text(doc_example("relay_pipeline"))
    (team / "test_our_setup.py").write_text(TEAM_CHECKS)
    (team / "pytest.ini").write_text(TEAM_SETTINGS)
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap  # this session's broker, as a team's CI would name one
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=team,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout, run.stdout
