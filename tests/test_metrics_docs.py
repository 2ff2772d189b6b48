"""docs/metrics.md lists exactly the metrics the processes register (found by building each one's metrics, as
they do at start-up, and checked against a scan of the source), with their types and labels; the alert rules
in deploy/monitoring name only those, the page shows the same rules as the file, and promtool (Prometheus'
own, from scripts/setup.sh) passes the file and its unit tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from whereabouts.controller.context import Context
from whereabouts.controller.health import Health, serve
from whereabouts.controller.metrics import Metric, Registry
from whereabouts.controller.nodeslice import NodeSliceController
from whereabouts.controller.podcleanup import PodCleanup
from whereabouts.controller.reconcile import Reconciler
from whereabouts.controller.usage import PoolUsage
from whereabouts.kube.credentials import load_credentials
from whereabouts.node.metrics import NodeMetrics

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "metrics.md"
ALERTS = REPO / "deploy" / "monitoring" / "alerts.yaml"
PROMTOOL = Path(os.environ.get("WHEREABOUTS_CACHE", "/var/cache/whereabouts-py")) / "promtool" / "promtool"
TARGET_LABELS = {"instance", "job"}  # what Prometheus adds to every series it scrapes


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Metric]:
    """Every metric of `whereabouts-controller all`, of install-cni (pod cleanup, the node daemon) and of an
    endpoint, by the name exposed: built as the processes build them, with no server to talk to."""
    directory = tmp_path_factory.mktemp("metrics")
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "kube-system"}}],
        "current-context": "x",
    }))  # fmt: skip
    registry = Registry()
    ctx = Context(load_credentials(str(kubeconfig)), "kube-system", registry=registry)
    Reconciler(ctx), PodCleanup(ctx), NodeSliceController(ctx), PoolUsage(ctx)
    NodeMetrics(registry, fallbacks_dir=str(directory))
    endpoint = serve("127.0.0.1", 0, registry, Health())
    endpoint.shutdown()
    endpoint.server_close()
    return registry.metrics


def kind(metric: Metric) -> str:
    return type(metric.family).__name__.lower()


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The tables' rows: name -> (type, label names)."""
    rows = re.findall(r"^\| `(whereabouts_\w+)` \| (\w+) \|([^|]*)\|", DOC.read_text(), re.M)
    assert len(rows) == len({name for name, _, _ in rows}), "a metric listed twice"
    return {name: (kind, tuple(re.findall(r"`(\w+)`(?: \([^)]*\))?", labels))) for name, kind, labels in rows}


def test_the_page_lists_every_metric_exported_with_its_type_and_labels(exported: dict[str, Metric]) -> None:
    listed = documented()
    assert set(listed) == set(exported), (sorted(set(exported) - set(listed)), sorted(set(listed) - set(exported)))
    for name, metric in exported.items():
        assert listed[name] == (kind(metric), metric.labels), name


def test_every_metric_the_source_registers_is_among_those_built(exported: dict[str, Metric]) -> None:
    """A scan of src/ for `.counter("name"`, `.gauge(`, `.histogram(`: a process's metric this test does not
    build would be missing from the page unnoticed. (The operator's tools keep a registry of their own that
    nothing serves.)"""
    pattern = re.compile(r"\.(counter|gauge|histogram)\(\s*\"(\w+)\"")
    found = {
        f"whereabouts_{name}"
        for path in (REPO / "src" / "whereabouts").rglob("*.py")
        if "tools" not in path.relative_to(REPO / "src" / "whereabouts").parts
        for _, name in pattern.findall(path.read_text())
    }
    assert found and found <= set(exported), sorted(found - set(exported))


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_the_alert_rules_name_only_exported_metrics_and_their_labels(exported: dict[str, Metric]) -> None:
    for rule in rules():
        expr = rule["expr"]
        names = set(re.findall(r"\bwhereabouts_\w+", expr))
        assert names, rule["alert"]
        for name in names:
            metric = exported.get(name) or exported.get(re.sub(r"_(bucket|sum|count)$", "", name))
            assert metric is not None, f"{rule['alert']}: {name} is not exported"
            for label in re.findall(rf"{name}\{{([^}}]*)\}}", expr):
                used = set(re.findall(r"(\w+)\s*(?:=|!=|=~|!~)", label))
                assert used <= set(metric.labels), f"{rule['alert']}: {name} has no label {used}"
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",")}
            known = TARGET_LABELS.union(*(exported[name].labels for name in names))
            assert labels <= known, f"{rule['alert']}: grouped by {labels - known}"


def test_the_page_shows_the_rules_file(exported: dict[str, Metric]) -> None:
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]
    assert yaml.safe_load(ALERTS.read_text()) in blocks


@pytest.mark.parametrize("check", [("check", "rules", str(ALERTS)), ("test", "rules", "alerts_test.yaml")],
                         ids=["check", "unit-tests"])  # fmt: skip
def test_promtool_passes_the_rules(check: tuple[str, ...]) -> None:
    assert PROMTOOL.exists(), f"{PROMTOOL} missing: run scripts/setup.sh as root"
    done = subprocess.run([str(PROMTOOL), *check], cwd=ALERTS.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
