"""The fast path of Create and Get (docs/performance.md) keeps its guarantees: concurrent writes
that share a transaction each land, KMIP Fresh turns False on the first Get, and a database that
dropped every pooled connection (PostgreSQL restart) costs no request on the hot path."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

from kmip_bridge.store.store import normalise_url

from .conftest import Instance, Server, _pg_admin

pytestmark = pytest.mark.e2e

CLIENTS = 8
KEYS_PER_CLIENT = 6


def _unopened(server: Server) -> ProxyKmipClient:
    return ProxyKmipClient(config="admin", config_file=str(server.client_conf()))


def _client(server: Server) -> ProxyKmipClient:
    c = _unopened(server)
    c.open()
    return c


def _fresh(client: ProxyKmipClient, uid: str) -> bool:
    _, attrs = client.get_attributes(uid, ["Fresh"])
    values = [a.attribute_value.value for a in attrs if a.attribute_name.value == "Fresh"]
    assert len(values) == 1, attrs
    return bool(values[0])


def _in_parallel(work, n: int) -> list[object]:  # type: ignore[no-untyped-def]
    """Runs work(i) on n threads at once; returns their results (re-raises the first failure)."""
    results: list[object] = [None] * n
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_concurrent_creates_and_first_gets_all_land_and_clear_fresh(server: Server, instance: Instance) -> None:
    clients = [_client(server) for _ in range(CLIENTS)]
    try:
        def create(i: int) -> list[str]:
            return [clients[i].create(enums.CryptographicAlgorithm.AES, 256) for _ in range(KEYS_PER_CLIENT)]

        made: list[list[str]] = _in_parallel(create, CLIENTS)  # type: ignore[assignment]
        uids = [u for batch in made for u in batch]
        assert len(set(uids)) == CLIENTS * KEYS_PER_CLIENT
        checker = clients[0]
        assert all(_fresh(checker, u) for u in uids), "a key not yet served must be Fresh"

        def get(i: int) -> list[bytes]:
            return [clients[i].get(u).value for u in made[i]]

        values: list[list[bytes]] = _in_parallel(get, CLIENTS)  # type: ignore[assignment]
        assert all(len(v) == 32 for batch in values for v in batch)
        # Each Get answered only after its Fresh flip was committed: every client sees False now,
        # and so does the database itself.
        assert not any(_fresh(checker, u) for u in uids)
        engine = sa.create_engine(normalise_url(instance.database_url))
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT uid, fresh FROM objects")).all()
        finally:
            engine.dispose()
        stored = {uid: fresh for uid, fresh in rows}
        assert all(uid in stored and not stored[uid] for uid in uids)
        # A second Get returns the same key (the grouped writes stored what was handed out).
        assert [checker.get(u).value for u in made[0]] == values[0]
    finally:
        for c in clients:
            c.close()


def test_fresh_is_true_until_served_and_other_reads_keep_it(server: Server) -> None:
    with _unopened(server) as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 128)
        c.get_attributes(uid)  # reading attributes does not serve the key
        assert _fresh(c, uid)
        c.get(uid)
        assert not _fresh(c, uid)
        c.get(uid)
        assert not _fresh(c, uid)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite has no server to drop them
def test_create_and_get_survive_the_database_dropping_every_connection(
    server: Server, instance: Instance, backend: str
) -> None:
    with _unopened(server) as c:
        before = [c.create(enums.CryptographicAlgorithm.AES, 128) for _ in range(4)]
        keys = {u: c.get(u).value for u in before}  # every worker's pool now holds connections
        dbname = instance.database_url.rsplit("/", 1)[1]
        admin = _pg_admin()
        try:
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                )
                (killed,) = cur.fetchone()
        finally:
            admin.close()
        assert killed >= 1
        # Without pool pre-ping the dead connections are found by the statements themselves:
        # reads retry once on a new connection, grouped writes retry alone.
        for uid, value in keys.items():
            assert c.get(uid).value == value
        after = [c.create(enums.CryptographicAlgorithm.AES, 128) for _ in range(4)]
        assert all(len(c.get(u).value) == 16 for u in after)
