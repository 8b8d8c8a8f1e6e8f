"""The Grafana dashboard and the Prometheus alert rules in ``deploy/`` parse, and every
metric they query is one that ``/metrics`` (gateway or engine replica) exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from modelplane.engines.metrics import EngineMetrics
from modelplane.telemetry.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def exposed() -> set[str]:
    """Every sample name the two exporters can produce, from their ``# TYPE`` lines."""
    text = Metrics().render().decode() + EngineMetrics(dict).render().decode()
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        family = family.removesuffix("_total")
        names |= {family + suffix for suffix in SUFFIXES[kind]}
    return names


def queried(expr: str) -> set[str]:
    return set(re.findall(r"\bmodelplane_[a-z0-9_]+", expr))


def _exprs(obj: Any) -> list[str]:
    """Every PromQL string in a dashboard: targets' ``expr``, variables' queries."""
    if isinstance(obj, dict):
        found = [v for k, v in obj.items() if k in ("expr", "definition") and isinstance(v, str)]
        return found + [e for v in obj.values() for e in _exprs(v)]
    if isinstance(obj, list):
        return [e for v in obj for e in _exprs(v)]
    return []


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "modelplane.json").read_text())
    exprs = _exprs(dashboard["panels"]) + _exprs(dashboard["templating"])
    assert len(exprs) > 20
    names = exposed()
    for expr in exprs:
        assert queried(expr), expr
        assert queried(expr) <= names, (expr, queried(expr) - names)
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in ("Request rate", "Error rate", "Time to first token p95", "Cache hit ratio"):
        assert wanted in titles
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_alert_rules_parse_and_query_only_metrics_that_exist() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    [group] = rules["groups"]
    names = exposed()
    alerts = {}
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert queried(rule["expr"]) and queried(rule["expr"]) <= names, rule["expr"]
        alerts[rule["alert"]] = rule["expr"]
    assert {
        "ModelplaneHighErrorRate",
        "ModelplaneTTFTAboveTarget",
        "ModelplaneReplicaDown",
        "ModelplaneBudgetNearLimit",
    } <= set(alerts)
    assert "modelplane_ttft_seconds_bucket" in alerts["ModelplaneTTFTAboveTarget"]


def test_the_docs_list_every_metric_there_is() -> None:
    doc = (DEPLOY.parent / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"^\| `(modelplane_[a-z_]+)` \|", doc, re.M))
    text = Metrics().render().decode() + EngineMetrics(dict).render().decode()
    assert documented == set(re.findall(r"^# TYPE (\S+) ", text, re.M))
