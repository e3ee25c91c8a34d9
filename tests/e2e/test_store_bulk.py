"""Store.insert_objects (the bulk path of ``bench --scale``) on SQLite and PostgreSQL: what it
writes reads back like a single insert, Locate by Name finds it, and a failing batch writes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kmip_bridge.store import AttrRow, ObjectRow, Store, StoreError
from kmip_bridge.store.migrate import upgrade

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/bulk.db"
    else:
        make: Callable[[], str] = request.getfixturevalue("pg_database")
        url = make()
    s = Store(url)
    upgrade(s.engine)
    yield s
    s.close()


def _object(i: int) -> tuple[ObjectRow, list[AttrRow]]:
    row = ObjectRow(uid=f"uid-{i}", object_type=2, state=1, owner="admin", created_at=1000 + i,
                    kek_label="default-v1", kek_kind="aes-kwp", nonce=b"n" * 12, ciphertext=bytes([i]) * 48,
                    wrapped_dek=b"w" * 48, wrap_nonce=b"v" * 12)
    attrs = [AttrRow("Name", f"name-{i}".encode(), 0, f"name-{i}"), AttrRow("Cryptographic Length", b"256", 0, "256")]
    return row, attrs


def test_bulk_rows_read_back_and_locate_by_name(store: Store) -> None:
    store.insert_objects([_object(i) for i in range(50)])
    got = store.load_object("uid-7")
    assert got is not None and got.ciphertext == bytes([7]) * 48 and got.owner == "admin" and got.fresh
    assert [(a.name, a.search) for a in store.load_attributes("uid-7")] == [
        ("Name", "name-7"), ("Cryptographic Length", "256")]
    found = store.locate(owner=None, other_types=None, attribute_filters=[("Name", "name-7")])
    assert [r.uid for r in found] == ["uid-7"]
    mine = store.locate(owner="admin", other_types=frozenset(), attribute_filters=[("Name", "name-49")])
    assert [r.uid for r in mine] == ["uid-49"]
    assert store.locate(owner="bob", other_types=frozenset(), attribute_filters=[("Name", "name-7")]) == []


def test_a_failing_batch_writes_nothing(store: Store) -> None:
    store.insert_objects([_object(1)])
    with pytest.raises(StoreError):
        store.insert_objects([_object(2), _object(1)])  # uid-1 exists already
    assert store.load_object("uid-2") is None
    assert store.load_attributes("uid-2") == []
