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

from .conftest import Instance, Server, free_port, make_instance, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    instance: Instance = make_instance(tmp_path_factory.mktemp("metrics"), None)
    port = free_port()
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["metrics"] = {"enabled": True, "port": port, "kek_stats_seconds": 0.5}
    cfg["audit"] = {"checkpoint_every": 4}
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
    # 11 audit records: checkpoints at 4 and 8; the metric shows the newest one's count, which
    # the checkpoint file holds too.
    assert s[("kmip_bridge_audit_checkpoint_records", ())] == 8
    last = (server.dir / "audit.jsonl.checkpoints").read_text().splitlines()[-1]
    assert '"seq":8' in last
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


def _wait_for(base: str, want: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict:  # type: ignore[type-arg]
    """The samples once every ``want`` value shows (workers refresh KEK counts periodically)."""
    deadline = time.monotonic() + 20
    while True:
        s = _samples(base)
        if all(s.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            return s
        time.sleep(0.2)


def test_token_and_database_latency_and_kek_versions(metrics_server: tuple[Server, str]) -> None:
    server, base = metrics_server
    before = _samples(base)

    def count(s: dict, name: str, label: tuple[str, str]) -> float:  # type: ignore[type-arg]
        return s.get((name, (label,)), 0.0)

    with ProxyKmipClient(config="admin", config_file=str(server.client_conf())) as c:
        uids = [c.create(enums.CryptographicAlgorithm.AES, 256) for _ in range(3)]
        for uid in uids:
            c.get(uid)
    s = _samples(base)
    keyhsm = "kmip_bridge_keyhsm_call_duration_seconds_count"
    assert count(s, keyhsm, ("call", "seal")) - count(before, keyhsm, ("call", "seal")) == 3
    assert count(s, keyhsm, ("call", "open")) - count(before, keyhsm, ("call", "open")) == 3
    # Database and token round trips, from the workers' readiness probes (every 2 s).
    probe = "kmip_bridge_probe_duration_seconds_count"
    s = _samples(base)
    deadline = time.monotonic() + 20
    while count(s, probe, ("target", "database")) <= count(before, probe, ("target", "database")):
        assert time.monotonic() < deadline, "no database probe recorded"
        time.sleep(0.5)
        s = _samples(base)
    assert count(s, probe, ("target", "keyhsm")) > 0
    assert s[("kmip_bridge_probe_duration_seconds_sum", (("target", "database"),))] > 0

    # KEK versions in use: the current one, and objects per version — also after a rotation.
    # Every object this server made (other tests of this module made some too).
    total = s[("kmip_bridge_requests_total", (("operation", "CREATE"), ("result", "success")))]
    s = _wait_for(base, {("kmip_bridge_kek_objects", (("kek", "default-v1"),)): total})
    assert s[("kmip_bridge_kek_objects", (("kek", "default-v1"),))] == total
    assert s[("kmip_bridge_kek_current", (("kek", "default-v1"),))] == 1
    run_cli("keyhsm", "rotate", "--config", str(server.config))
    with ProxyKmipClient(config="admin", config_file=str(server.client_conf())) as c:
        c.create(enums.CryptographicAlgorithm.AES, 256)
    s = _wait_for(base, {("kmip_bridge_kek_current", (("kek", "default-v2"),)): 1,
                         ("kmip_bridge_kek_current", (("kek", "default-v1"),)): 0,
                         ("kmip_bridge_kek_objects", (("kek", "default-v2"),)): 1})
    assert s[("kmip_bridge_kek_current", (("kek", "default-v2"),))] == 1
    assert s[("kmip_bridge_kek_current", (("kek", "default-v1"),))] == 0
    assert s[("kmip_bridge_kek_objects", (("kek", "default-v2"),))] == 1
    assert s[("kmip_bridge_kek_objects", (("kek", "default-v1"),))] == total


def test_group_commit_and_the_sqlite_write_lock(metrics_server: tuple[Server, str]) -> None:
    # What docs/performance.md reads the SQLite bound from: writes per commit, and how long the
    # one writer's lock was held and waited for.
    server, base = metrics_server
    before = _samples(base)
    with ProxyKmipClient(config="admin", config_file=str(server.client_conf())) as c:
        uids = [c.create(enums.CryptographicAlgorithm.AES, 256) for _ in range(3)]
        for uid in uids:
            c.get(uid)  # first Get: clears Fresh, a grouped write too
            c.get(uid)  # no write
    s = _samples(base)

    def delta(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return s.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert delta("kmip_bridge_group_commit_writes_total") == 6
    assert 1 <= delta("kmip_bridge_group_commit_transactions_total") <= 6
    assert delta("kmip_bridge_db_write_lock_seconds_total", (("phase", "held"),)) > 0
    assert ("kmip_bridge_db_write_lock_seconds_total", (("phase", "wait"),)) in s
