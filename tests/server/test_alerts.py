"""The alert rules and the Grafana dashboard shipped under docs/alerts/ (issue 19) use only
metrics a live `jq serve` exports: every `jq_*` name in their expressions is a series of GET
/metrics (with a histogram's _bucket/_sum/_count or a counter's _total as exported), and every
label they filter on is one that series has. `promtool check rules` validates the rules file
when promtool is installed (Debian's `prometheus` package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).parents[2] / "docs" / "alerts"
RULES = DOCS / "jq-alerts.rules.yml"
DASHBOARD = DOCS / "jq-dashboard.json"
_METRIC = re.compile(r"\b(jq_[a-z_]+)(\{[^}]*\})?")
_SERIES = re.compile(r"^(jq_[a-z_]+)(\{([^}]*)\})? ", re.MULTILINE)


def rule_exprs() -> list[str]:
    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def exported(server: Any) -> dict[str, set[str]]:
    """Series names of a live server's /metrics, with the label names each carries, after it
    has leased a job (so the per-queue families have a series) with a max latency set."""
    with server.client(server.admin_key) as client:
        client.post("/jobs", json={"payload": "x", "queue": "alerts"})
        client.post("/jobs", json={"payload": "y", "queue": "alerts"})
        client.post("/jobs/lease", json={"queue": "alerts"})
        deadline = time.monotonic() + 30
        # Per-queue latency is cached for a second: the threshold set just now shows after it.
        while "jq_queue_latency_breached{" not in (text := client.get("/metrics").text):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    names: dict[str, set[str]] = {}
    for name, _, labels in _SERIES.findall(text):
        names.setdefault(name, set()).update(
            part.split("=")[0] for part in labels.split(",") if part
        )
    return names


@pytest.fixture(scope="module")
def metrics(jq_module_server_factory: Any) -> dict[str, set[str]]:
    server = jq_module_server_factory()
    with server.client(server.admin_key) as client:
        client.put("/queues/alerts", json={"max_latency_ms": 3_600_000})
    return exported(server)


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_used_is_exported(source: str, metrics: dict[str, set[str]]) -> None:
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    assert exprs
    used = 0
    for expr in exprs:
        for name, selector in _METRIC.findall(expr):
            assert name in metrics, f"{name} (in {expr!r}) is not exported"
            for label in re.findall(r"([a-z_]+)\s*=~?", selector):
                assert label in metrics[name], f"{name} has no label {label!r}"
            used += 1
    assert used >= len(exprs)


def test_the_rules_file_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in result.stdout


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
