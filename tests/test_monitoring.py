"""The monitoring files of deploy/ (issue 14): the Prometheus alert rules, checked and
unit-tested with promtool (deploy/prometheus/alerts_test.yml), and the Grafana dashboard;
both may only use metric names that a worker and the ingest actually export.

promtool comes from `make test` (devtools/promtool.sh: PATH, else Debian's prometheus
package), or $PROMTOOL. Without it these tests fail saying how to get it: they do not skip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.observe import render_metrics
from tests.test_admin_units import snapshot
from tests.test_ingest import TRACK
from tests.test_ingest_observability import FakeSink, running

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "cs-relay.json"
METRIC = re.compile(r"\b((?:cs_relay|process|python)_[a-z0-9_]+)\b")


def promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "promtool not found: run `make promtool` (devtools/promtool.sh installs Debian's prometheus package "
            "when root with apt-get), `sudo apt-get install prometheus`, or set PROMTOOL=/path/to/promtool",
            pytrace=False,
        )
    return path


def run_promtool(*args: str) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
async def exported() -> set[str]:
    """Every sample name a worker and the ingest export: a worker-like snapshot rendered
    through the worker's registry, and the ingest app scraped after some traffic."""
    worker = snapshot()  # tests/test_admin_units.py's, with a skipped event too (an empty family has no samples)
    worker = dataclasses.replace(worker, counters={**worker.counters, "skipped.customersuccessbox": 1})
    names = {s.name for f in text_string_to_metric_families(render_metrics(worker).decode()) for s in f.samples}
    runner, session, client = await running(FakeSink())
    try:
        assert await client.post("/v1/track", json.dumps(TRACK).encode()) == 200
        names |= {name for name, _ in await client.metrics()}
    finally:
        await session.close()
        await runner.cleanup()
    return names


def test_promtool_checks_the_rules():
    out = run_promtool("check", "rules", str(RULES))
    assert "SUCCESS: 9 rules found" in out, out


def test_promtool_unit_tests_of_the_rules_pass():
    out = run_promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in out, out


def test_every_alert_has_a_unit_test_and_a_runbook_line():
    rules = [r for group in yaml.safe_load(RULES.read_text())["groups"] for r in group["rules"]]
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", ())
    }
    operations = (ROOT / "docs" / "operations.md").read_text()
    for rule in rules:
        assert rule["alert"] in tested, f"{rule['alert']} has no case in alerts_test.yml"
        assert f"`{rule['alert']}`" in operations, f"{rule['alert']} has no runbook line in docs/operations.md"
        assert rule["labels"]["severity"] in ("warning", "critical")


async def test_alerts_use_only_exported_metrics(exported):
    used = set(METRIC.findall(RULES.read_text()))
    # __name__ regexes name counters by their stem: cs_relay_(delivered|retried|delivery_failed)_total
    for stem in ("delivered", "retried", "delivery_failed"):
        assert f"cs_relay_{stem}_total" in exported
    assert used and used - {"cs_relay_"} <= exported, sorted(used - exported)


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]


async def test_the_dashboard_is_grafana_json_over_exported_metrics(exported, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41 and dashboard["uid"] == "cs-relay"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
    exprs = dashboard_exprs(dashboard)
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert not used - exported, f"the dashboard uses metrics nobody exports: {sorted(used - exported)}"
    # What the brief asks to see is there.
    for needed in (
        "cs_relay_delivered_total",
        "cs_relay_retried_total",
        "cs_relay_delivery_failed_total",
        "cs_relay_dead_lettered_total",
        "cs_relay_pending_events",
        "cs_relay_consumer_lag_records",
        "cs_relay_partner_request_seconds_bucket",
        "cs_relay_ingest_requests_total",
        "cs_relay_ingest_produce_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needed in used, needed
    # Every expression is valid PromQL: promtool checks them as recording rules.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:expr_{i}",
                        "expr": expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*"),
                    }
                    for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in run_promtool("check", "rules", str(path))
