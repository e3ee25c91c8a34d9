"""The metrics endpoint: Prometheus /metrics across workers, /healthz, /readyz."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import yaml
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Instance, Server, free_port, make_instance

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    instance: Instance = make_instance(tmp_path_factory.mktemp("metrics"), None)
    port = free_port()
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["metrics"] = {"enabled": True, "port": port}
    instance.config.write_text(yaml.safe_dump(cfg))
    srv = instance.start()
    yield srv, f"http://127.0.0.1:{port}"
    assert srv.stop() == 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = _get(base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_and_connections(metrics_server: tuple[Server, str]) -> None:
    server, base = metrics_server
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    try:
        uids = [c.create(enums.CryptographicAlgorithm.AES, 256) for _ in range(5)]
        for uid in uids:
            c.get(uid)
        with pytest.raises(Exception):  # noqa: B017 - any KMIP failure
            c.get("no-such-object")
        s = _samples(base)
        assert s[("kmip_bridge_open_connections", ())] >= 1
    finally:
        c.close()
    assert s[("kmip_bridge_requests_total", (("operation", "CREATE"), ("result", "success")))] == 5
    assert s[("kmip_bridge_requests_total", (("operation", "GET"), ("result", "success")))] == 5
    assert s[("kmip_bridge_requests_total", (("operation", "GET"), ("result", "operation_failed")))] == 1
    assert s[("kmip_bridge_request_duration_seconds_count", (("operation", "GET"),))] == 6
    assert s[("kmip_bridge_request_duration_seconds_bucket", (("le", "+Inf"), ("operation", "CREATE")))] == 5
    assert s[("kmip_bridge_request_duration_seconds_sum", (("operation", "CREATE"),))] > 0
    deadline = time.monotonic() + 10
    while _samples(base).get(("kmip_bridge_open_connections", ()), 0) != 0:
        assert time.monotonic() < deadline, "open connections gauge did not drop to 0"
        time.sleep(0.2)


def test_healthz_and_readyz(metrics_server: tuple[Server, str]) -> None:
    _, base = metrics_server
    assert _get(base + "/healthz") == (200, "ok\n")
    deadline = time.monotonic() + 15
    while True:
        status, body = _get(base + "/readyz")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (status, body) == (200, "ready (2 workers)\n"), _get(base + "/metrics")[1][-1500:]
    assert _get(base + "/nope")[0] == 404
    ready = [v for (name, _), v in _samples(base).items() if name == "kmip_bridge_worker_ready"]
    assert ready == [1.0, 1.0]
