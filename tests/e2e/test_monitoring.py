"""conf/prometheus-rules.yaml and conf/grafana-dashboard.json against what a real server exports:
every kmip_bridge_* metric (and label) they use appears in a /metrics scrape of a running server
with metrics on; the rules pass `promtool check rules`, and so do the dashboard's expressions
(turned into recording rules); docs/operations.md lists every metric. Also the metrics added with
them: failures by Result Reason, the build-info gauge, and the version in Query's Server
Information."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kmip.core import enums
from kmip.core.enums import Operation
from kmip.core.enums import Tags as T
from kmip.pie.client import ProxyKmipClient
from prometheus_client.parser import text_string_to_metric_families

import kmip_bridge
from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv

from .conftest import Server, free_port, make_instance

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "conf" / "prometheus-rules.yaml"
DASHBOARD = REPO / "conf" / "grafana-dashboard.json"
# Labels Prometheus itself adds at scrape time, and the histogram bucket label.
SCRAPE_LABELS = {"instance", "job", "le"}


def promtool() -> str | None:
    return shutil.which("promtool") or next(
        (str(p) for p in [REPO / ".cache" / "promtool" / "promtool"] if os.access(p, os.X_OK)), None)


def rules_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def _grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by what they expand to, so that promtool can parse the result."""
    expr = expr.replace("$__rate_interval", "5m").replace('"$instance"', '".*"')
    return re.sub(r"^label_values\((\w+), \w+\)$", r"\1", expr)


def test_rules_file_structure() -> None:
    doc = yaml.safe_load(RULES.read_text())
    names = set()
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] not in names
            names.add(rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert "kmip_bridge_" in rule["expr"] or rule["alert"] == "KmipBridgeDown"
    assert len(names) >= 10


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "kmip-bridge" and dash["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
            assert p["datasource"]["uid"] == "${datasource}"


@pytest.fixture(scope="module")
def promtool_path() -> str:
    path = promtool()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: scripts/bootstrap.sh fetches it")
        pytest.skip("SKIPPING promtool CHECKS LOUDLY: no promtool (scripts/bootstrap.sh fetches it)")
    return path


def test_promtool_accepts_the_rules(promtool_path: str) -> None:
    out = subprocess.run([promtool_path, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_promtool_accepts_the_dashboard_expressions(promtool_path: str, tmp_path: Path) -> None:
    rules = [{"record": f"kmip_bridge_dashboard:expr{i}", "expr": _grafana_to_promql(e)}
             for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-as-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool_path, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_catches_an_unparsable_expression(promtool_path: str, tmp_path: Path) -> None:
    """Control: the check above would fail on a broken expression."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "A", "expr": "sum by (instance (rate(kmip_bridge_requests_total[5m]))"}]}]}))
    assert subprocess.run([promtool_path, "check", "rules", str(path)], capture_output=True, timeout=60).returncode


# -- against a real scrape ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, set[str]], list]]:
    """A metrics-enabled server after some traffic (successes, a failure, a Query): every sample
    name in its /metrics with the label names it carries, and the parsed families."""
    instance = make_instance(tmp_path_factory.mktemp("monitoring"), None)
    port = free_port()
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["metrics"] = {"enabled": True, "port": port, "kek_stats_seconds": 0.5}
    instance.config.write_text(yaml.safe_dump(cfg))
    srv = instance.start()
    try:
        with ProxyKmipClient(config="admin", config_file=str(srv.client_conf())) as c:
            uid = c.create(enums.CryptographicAlgorithm.AES, 256)
            c.get(uid)
            for _ in range(2):
                with pytest.raises(Exception):  # noqa: B017 - ITEM_NOT_FOUND, checked below by reason
                    c.get("no-such-object")
        url = f"http://127.0.0.1:{port}/metrics"
        names: dict[str, set[str]] = {}
        deadline = time.monotonic() + 30
        while True:  # KEK statistics and readiness arrive from the workers' threads
            with urllib.request.urlopen(url, timeout=10) as r:
                families = list(text_string_to_metric_families(r.read().decode()))
            names = {}
            for family in families:
                for s in family.samples:
                    names.setdefault(s.name, set()).update(s.labels)
            if {"kmip_bridge_kek_objects", "kmip_bridge_probe_duration_seconds_count"} <= set(names):
                break
            assert time.monotonic() < deadline, sorted(names)
            time.sleep(0.3)
        yield srv, names, families
    finally:
        assert srv.stop() == 0


def _referenced(exprs: list[str]) -> dict[str, set[str]]:
    """kmip_bridge_* metrics each expression names, with the label names it matches on."""
    out: dict[str, set[str]] = {}
    for expr in exprs:
        for m in re.finditer(r"\b(kmip_bridge_\w+)(\{([^}]*)\})?", expr):
            if m.group(1).startswith("kmip_bridge_dashboard:"):
                continue
            labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(3) or ""))
            out.setdefault(m.group(1), set()).update(labels)
    return out


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_and_label_used_is_exported(scraped, source: str) -> None:  # type: ignore[no-untyped-def]
    _, exported, _ = scraped
    exprs = rules_exprs() if source == "rules" else dashboard_exprs()
    used = _referenced(exprs)
    assert len(used) >= 10, used
    unknown = sorted(set(used) - set(exported))
    assert not unknown, f"{source} use metrics the server does not export: {unknown}"
    for name, labels in used.items():
        assert labels <= exported[name] | SCRAPE_LABELS, (name, labels - exported[name])
    # Grouping labels (by/on/without) must exist on some metric of the same expression.
    for expr in exprs:
        metrics = [n for n in _referenced([expr]) if n in exported]
        have = set().union(*(exported[n] for n in metrics)) | SCRAPE_LABELS if metrics else SCRAPE_LABELS
        for group in re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr):
            wanted = {g.strip() for g in group.split(",") if g.strip()}
            assert wanted <= have, (expr, wanted - have)


def test_the_check_catches_a_misspelt_metric(scraped) -> None:  # type: ignore[no-untyped-def]
    """Control: a name the server does not export is found by the same comparison."""
    _, exported, _ = scraped
    used = _referenced(['rate(kmip_bridge_request_total{operation="GET"}[5m])'])
    assert set(used) - set(exported) == {"kmip_bridge_request_total"}


def test_operations_md_lists_every_exported_metric(scraped) -> None:  # type: ignore[no-untyped-def]
    _, _, families = scraped
    doc = (REPO / "docs" / "operations.md").read_text()
    for family in families:
        if family.name.startswith("kmip_bridge_"):
            shown = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{shown}`" in doc or f"`{shown}`," in doc, shown


def _value(families: list, name: str, **labels: str) -> float | None:
    for family in families:
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_failures_counted_by_operation_and_reason(scraped) -> None:  # type: ignore[no-untyped-def]
    _, _, families = scraped
    assert _value(families, "kmip_bridge_request_errors_total", operation="GET", reason="item_not_found") == 2
    assert _value(families, "kmip_bridge_requests_total", operation="GET", result="operation_failed") == 2
    # Control: successes are not errors.
    assert _value(families, "kmip_bridge_requests_total", operation="CREATE", result="success") == 1
    assert _value(families, "kmip_bridge_request_errors_total", operation="CREATE") is None


def test_build_info_and_query_server_information(scraped) -> None:  # type: ignore[no-untyped-def]
    srv, _, families = scraped
    assert _value(families, "kmip_bridge_build_info", version=kmip_bridge.__version__) == 1
    ctx = client_context(srv.dir / "pki" / "ca.pem", srv.dir / "clients" / "admin" / "cert.pem",
                         srv.dir / "clients" / "admin" / "key.pem")
    payload = ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_SERVER_INFORMATION)])
    for version in ((1, 4), (2, 1)):
        with RawClient("127.0.0.1", srv.port, ctx) as client:
            response = client.call(request([(Operation.QUERY.value, payload)], version=version))
        out = response.get(T.BATCH_ITEM.value).get(T.RESPONSE_PAYLOAD.value)
        assert out.value_of(T.VENDOR_IDENTIFICATION.value) == "kmip-bridge"
        info = out.get(T.SERVER_INFORMATION.value)
        if version < (2, 0):  # Server Version / Product Name are 2.0 tags: a 1.x answer has neither
            assert info is not None and info.value == []
            continue
        assert info.value_of(T.SERVER_VERSION.value) == kmip_bridge.__version__
        assert info.value_of(T.PRODUCT_NAME.value) == "kmip-bridge"


def test_version_flag() -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "kmip-bridge"), "--version"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, f"kmip-bridge {kmip_bridge.__version__}\n")


# -- the alerts fire when they should, and only then (promtool test rules on synthetic series) -------

def _expected(alert: str, labels: dict[str, str], value: float) -> dict:
    """The alert as Prometheus would send it: its rule's labels and rendered annotations."""
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r.get("alert") == alert)

    def render(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)
        return text.replace("{{ $value }}", f"{value:g}")

    return {"exp_labels": {**rule["labels"], **labels},
            "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()}}


def _series(name: str, values: str, **labels: str) -> dict:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


ALERT_CASES = [
    # (alert, input series, eval time, alerts expected at that time)
    ("KmipBridgeNotReady", [
        _series("kmip_bridge_worker_ready", "1 1 0 0 0 0 0", instance="a", pid="1"),
        _series("kmip_bridge_worker_ready", "1 1 1 1 1 1 1", instance="a", pid="2"),
        _series("kmip_bridge_worker_ready", "1 1 1 1 1 1 1", instance="b", pid="3")],
     "5m", [("KmipBridgeNotReady", {"instance": "a"}, 0)]),
    ("KmipBridgeNotReady", [_series("kmip_bridge_worker_ready", "1 1 0 1 1 1 1", instance="a", pid="1")],
     "5m", []),  # one failed check, then ready again: no alert
    ("KmipBridgeCryptographicFailures", [
        _series("kmip_bridge_request_errors_total", "0+1x30", instance="a", operation="GET",
                reason="cryptographic_failure"),
        _series("kmip_bridge_request_errors_total", "0+50x30", instance="b", operation="GET",
                reason="item_not_found")],
     "15m", [("KmipBridgeCryptographicFailures", {"instance": "a", "operation": "GET"}, 0)]),
    ("KmipBridgeHighErrorRatio", [
        _series("kmip_bridge_requests_total", "0+60x30", instance="a", operation="GET", result="success"),
        _series("kmip_bridge_requests_total", "0+30x30", instance="a", operation="GET", result="operation_failed"),
        _series("kmip_bridge_requests_total", "0+600x30", instance="b", operation="GET", result="success"),
        _series("kmip_bridge_requests_total", "0+6x30", instance="b", operation="GET", result="operation_failed")],
     "20m", [("KmipBridgeHighErrorRatio", {"instance": "a"}, 0)]),  # b fails 1 %: below 5 %
    ("KmipBridgeRetiredKekStillInUse", [
        _series("kmip_bridge_kek_objects", "5x200", instance="a", kek="default-v1"),
        _series("kmip_bridge_kek_current", "0x200", instance="a", kek="default-v1"),
        _series("kmip_bridge_kek_objects", "3x200", instance="a", kek="default-v2"),
        _series("kmip_bridge_kek_current", "1x200", instance="a", kek="default-v2"),
        _series("kmip_bridge_kek_objects", "0x200", instance="b", kek="default-v1"),  # rewrapped: fine
        _series("kmip_bridge_kek_current", "0x200", instance="b", kek="default-v1")],
     "8d", [("KmipBridgeRetiredKekStillInUse", {"instance": "a", "kek": "default-v1"}, 5)]),
    ("KmipBridgeRetiredKekStillInUse", [
        _series("kmip_bridge_kek_objects", "5x200", instance="a", kek="default-v1"),
        _series("kmip_bridge_kek_current", "0x200", instance="a", kek="default-v1")],
     "6d", []),  # a rotation in progress: rewrap has a week
    ("KmipBridgeNoCurrentKek", [
        _series("kmip_bridge_kek_current", "1 0 0 0 0 0 0 0 0", instance="a", kek="default-v1"),
        _series("kmip_bridge_kek_current", "1 1 1 1 1 1 1 1 1", instance="b", kek="default-v1")],
     "8m", [("KmipBridgeNoCurrentKek", {"instance": "a"}, 0)]),
]


def _promtool_test(promtool_path: str, path: Path, cases: list, interval: str) -> subprocess.CompletedProcess[str]:
    tests = [{"interval": interval, "input_series": series, "alert_rule_test": [{
        "eval_time": at, "alertname": alert,
        "exp_alerts": [_expected(name, labels, value) for name, labels, value in expected]}]}
        for alert, series, at, expected in cases]
    # Evaluated at the samples' own interval: a sample older than 5 min is stale to Prometheus.
    path.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": interval, "tests": tests}))
    return subprocess.run([promtool_path, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


def test_alerts_fire_when_they_should_and_only_then(promtool_path: str, tmp_path: Path) -> None:
    for interval, cases in (("1h", [c for c in ALERT_CASES if c[2].endswith("d")]),
                            ("1m", [c for c in ALERT_CASES if not c[2].endswith("d")])):
        out = _promtool_test(promtool_path, tmp_path / f"alerts-{interval}.yaml", cases, interval)
        assert out.returncode == 0, out.stdout + out.stderr
    # Control: promtool compares every alert, so a case expecting nothing where one fires fails.
    alert, series, at, _ = ALERT_CASES[0]
    assert _promtool_test(promtool_path, tmp_path / "control.yaml", [(alert, series, at, [])], "1m").returncode
