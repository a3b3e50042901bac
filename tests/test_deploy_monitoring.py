"""deploy/prometheus and deploy/grafana: rules and panels that query metrics thumbgen exports.

Where promtool is at hand (``make test`` puts Debian's beside the venv's python; or on the PATH,
or ``PROMTOOL=/path``), the rules also go through ``promtool check rules`` and their unit tests
through ``promtool test rules``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from watcher.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "thumbgen.json"
_METRIC = re.compile(r"\b((?:thumbgen|process)_[a-z0-9_]+)")
_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created", "_info")


def exported_names() -> set[str]:
    """Every sample name thumbgen's registry can export (labelled families included)."""
    registry = CollectorRegistry()
    Metrics(registry)
    from prometheus_client import PROCESS_COLLECTOR

    registry.register(PROCESS_COLLECTOR)
    families = [f.name for f in registry.collect()]
    return {name + suffix for name in families for suffix in _SUFFIXES}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target for panel in panels for target in panel.get("targets", [])]


def test_alerts_cover_what_operators_asked_for() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in ("ThumbgenNoProgress", "ThumbgenFailureRatioHigh", "ThumbgenRemoteDown",
                 "ThumbgenNoRecentBackup", "ThumbgenDiskLow"):
        assert name in rules, name
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert "26 * 3600" in rules["ThumbgenNoRecentBackup"]["expr"]
    assert "thumbgen_queue_depth" in rules["ThumbgenNoProgress"]["expr"]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_queried_is_exported(source: str) -> None:
    exprs = ([rule["expr"] for rule in alert_rules()] if source == "alerts"
             else [target["expr"] for target in dashboard_targets()])
    used = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert used, "no thumbgen metric queried"
    assert used <= exported_names(), used - exported_names()


def test_the_dashboard_has_the_panels_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("throughput", "failures by reason", "p50 / p95", "queue depth", "breaker",
                  "backup"):
        assert topic in titles, topic
    for target in dashboard_targets():
        assert target["refId"] and target["expr"] and target["datasource"]["uid"] == (
            "${datasource}")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables


@pytest.fixture(scope="module")
def promtool() -> str:
    beside_python = Path(sys.executable).with_name("promtool")  # where `make test` puts it
    tool = (os.environ.get("PROMTOOL") or (str(beside_python) if beside_python.exists() else None)
            or shutil.which("promtool"))
    if not tool:
        pytest.skip("promtool not installed (Debian package prometheus); rules checked by parsing")
    return tool


def _promtool(tool: str, *args: str, cwd: Path | None = None) -> None:
    result = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_and_unit_tests_the_rules(promtool: str) -> None:
    _promtool(promtool, "check", "rules", str(ALERTS))
    _promtool(promtool, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    """Grafana's variables replaced, each panel query must be valid PromQL."""
    rules = [{"record": f"dashboard:query{n}",
              "expr": t["expr"].replace("$__rate_interval", "5m").replace("$instance", ".*")
                               .replace("$job", ".*")}
             for n, t in enumerate(dashboard_targets())]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool(promtool, "check", "rules", str(path))
