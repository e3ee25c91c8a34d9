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


def test_awkward_values_survive_the_bulk_path(store: Store) -> None:
    """PostgreSQL's bulk path is COPY's text format: separators, backslashes, every byte value
    and NULLs must arrive as given, not as COPY would read them unescaped."""
    row, _ = _object(3)
    row.ciphertext = bytes(range(256))
    row.kek_kind = None
    tricky = "tab\there, line\nbreak, cr\r, back\\slash, \\N, \\x00"
    attrs = [AttrRow("Name", b"\x00\t\n\\\r" + bytes(range(256)), 0, tricky), AttrRow("Comment", b"\\N", 1, None)]
    store.insert_objects([(row, attrs)])
    got = store.load_object("uid-3")
    assert got is not None and got.ciphertext == bytes(range(256)) and got.kek_kind is None and got.fresh
    assert store.load_attributes("uid-3") == attrs
    found = store.locate(owner=None, other_types=None, attribute_filters=[("Name", tricky)])
    assert [r.uid for r in found] == ["uid-3"]


def test_count_located_counts_what_locate_returns(store: Store) -> None:
    """A paging Locate's Located Items comes from count_located, not from loading every match:
    for each shape of criteria (Fresh, a column, included) the count equals the length of the
    unpaged answer."""
    items = []
    for i in range(30):
        row, attrs = _object(i)
        row.owner = "admin" if i % 3 else "bob"
        row.object_type = 2 if i % 2 else 7
        row.state = 1 if i % 5 else 5  # a few destroyed
        row.fresh = i % 4 != 0  # a few served already
        attrs.append(AttrRow("Object Group", b"g", 0, "even" if i % 2 == 0 else "odd"))
        attrs.append(AttrRow("Cryptographic Usage Mask", b"m", 0, str(12 if i % 4 else 4)))
        items.append((row, attrs))
    store.insert_objects(items)
    shapes: list[dict] = [
        {"owner": None, "other_types": None},
        {"owner": "admin", "other_types": frozenset()},
        {"owner": "bob", "other_types": frozenset({2})},
        {"owner": None, "other_types": None, "object_type": 7, "exclude_states": [5]},
        {"owner": None, "other_types": None, "attribute_filters": [("Object Group", "even")]},
        {"owner": "admin", "other_types": frozenset(), "attribute_filters": [("Object Group", "odd")],
         "bit_filters": [("Cryptographic Usage Mask", 8)]},
        {"owner": None, "other_types": None, "attribute_filters": [("Name", "name-none")]},
        {"owner": "admin", "other_types": frozenset(), "fresh": False},
    ]
    counts = []
    for criteria in shapes:
        everything = store.locate(**criteria)
        counts.append(store.count_located(**criteria))
        assert counts[-1] == len(everything), criteria
        page = store.locate(**criteria, offset=2, limit=3)
        assert page == everything[2:5]
    assert counts[0] == 30 and 0 in counts and len(set(counts)) > 4  # the shapes differ


def test_get_finds_its_dates_by_uid_and_name(store: Store) -> None:
    """Get's statement reads the object's Activation and Deactivation Date by (uid, name) through
    ix_attributes_uid_name. With only the uid and the name index, PostgreSQL chose the name index
    when its statistics said Activation Date was rare and then read every object's Activation Date
    for one Get (44 ms at 100,000 objects): here the statistics are taken before every object gets
    one, as after a mass activation. Objects carry a real Create's 16 attributes: with 2 each,
    PostgreSQL still preferred the name index for this small a table (docs/performance.md)."""
    import sqlalchemy as sa

    items = []
    # the attribute names of a real Create of an AES key (bench/preload.py)
    names = ["Cryptographic Algorithm", "Cryptographic Usage Mask", "Random Number Generator", "Lease Time",
             "Initial Date", "Last Change Date", "Original Creation Date", "Digest", "Sensitive",
             "Always Sensitive", "Extractable", "Never Extractable", "Protection Storage Mask", "Key Format Type"]
    for i in range(10000):
        row, attrs = _object(i % 256)
        row.uid, row.created_at = f"uid-{i}", 1000 + i
        items.append((row, attrs + [AttrRow(n, b"v", 0, str(i)) for n in names]))
    store.insert_objects(items)
    sqlite = store.engine.dialect.name == "sqlite"
    with store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if not sqlite:
            conn.exec_driver_sql("ANALYZE")
        conn.execute(sa.text("INSERT INTO attributes (uid, name, position, value, search) "
                             "SELECT uid, 'Activation Date', 0, :v, created_at FROM objects"), {"v": b"d"})
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql(explain + store.hot.load_object, ("uid-7",)))
    if sqlite:
        assert plan.count("USING INDEX ix_attributes_uid_name (uid=? AND name=?)") == 2, plan
    else:
        for name in ("Activation Date", "Deactivation Date"):
            cond = f"Index Cond: (((uid)::text = (objects.uid)::text) AND ((name)::text = '{name}'::text))"
            assert cond in plan, plan
        assert "Filter: ((uid)" not in plan and "Seq Scan" not in plan, plan
    got = store.load_object("uid-7")
    assert got is not None and got.ciphertext == bytes([7]) * 48
