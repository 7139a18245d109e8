"""The pytest plugin as a team gets it: cs-relay installed (not editable) into a fresh
virtualenv, pytest run from a folder outside the checkout with no PYTHONPATH and no
conftest, a team's test file using `partner_mocks`.

The fresh virtualenv borrows the dependencies (aiohttp, faust, pytest, ...) from this
one through a `.pth` file, so only cs-relay itself is installed (`pip install
--no-deps`) and the test stays well under a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")

TEAM_TEST = """
import json
import urllib.request
from pathlib import Path

import pytest


def post(url, body):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_our_signup_call_reaches_clientsuccess(partner_mocks):
    creds = partner_mocks.credentials
    url = (
        partner_mocks.url("clientsuccess")
        + f"/collector/1.0.0/projects/{creds['CLIENTSUCCESS_SOURCE_ID']}/events/Signed%20Up"
        + f"?api_key={creds['CLIENTSUCCESS_API_KEY']}"
    )
    body = {"identity": {"organization": {"id": "acme", "name": "Acme"}, "user": {"id": "u1"}}, "value": 1}
    assert post(url, body) == 200
    [request] = partner_mocks.requests("ClientSuccess")
    assert (request["method"], request["path"]) == ("POST", "/collector/1.0.0/projects/demo-source/events/Signed Up")
    assert request["json"] == body and request["status"] == 200
    assert request["query"]["api_key"] == "***"  # recorded with the key redacted


def test_each_test_starts_with_clean_mocks_and_faults_can_be_injected(partner_mocks):
    assert all(partner_mocks.requests(key) == [] for key in partner_mocks.urls)
    partner_mocks.fault("customersuccessbox", status=503, count=1)
    with pytest.raises(urllib.request.HTTPError) as failed:
        post(partner_mocks.url("csb") + "/api_js/v1_1/account", {"accountId": "A1"})
    assert failed.value.code == 503
    assert [r["status"] for r in partner_mocks.requests("csb")] == [503]


def test_the_installed_package_is_the_one_under_test():
    import streams
    from streams.localkafka import kafka_pom

    here = Path(__file__).resolve().parent
    assert Path(streams.__file__).resolve().is_relative_to(Path(here, "venv").resolve())
    assert kafka_pom().is_file() and kafka_pom().is_relative_to(Path(streams.__file__).parent)
"""


def test_a_team_uses_partner_mocks_from_the_installed_package(tmp_path: Path) -> None:
    source = tmp_path / "cs-relay-source"
    shutil.copytree(REPO, source, ignore=SKIP)
    team = tmp_path / "team"
    team.mkdir()
    venv.create(team / "venv", with_pip=True)
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
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    shutil.rmtree(source)  # nothing of the checkout is left to import from
    (team / "test_our_calls.py").write_text(TEAM_TEST)
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_our_calls.py"],
        cwd=team,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout, run.stdout
