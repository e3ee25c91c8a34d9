"""Resource budgets in batch processing (operations/dispatch.py), with fake handlers and a fake
store: the Undo batch's hold of SQLite's write lock (slow items refused, a time budget between
items on a clock the test controls) and server.max_response_size counted as items are produced.
The e2e side is tests/e2e/test_budgets.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from kmip.core.enums import BatchErrorContinuationOption as Bec
from kmip.core.enums import DerivationMethod, Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.operations import dispatch
from kmip_bridge.operations.context import Budgets, RequestContext, Services
from kmip_bridge.policy.identity import Identity
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.messages import BatchItem, Request
from kmip_bridge.protocol.ttlv import Item
from kmip_bridge.store import Store

OK, UNDONE = ResultStatus.SUCCESS.value, ResultStatus.OPERATION_UNDONE.value
FAILED = ResultStatus.OPERATION_FAILED.value


class FakeStore:
    """Records whether the batch's transaction committed or rolled back."""

    def __init__(self, single_writer: bool) -> None:
        self.single_writer = single_writer
        self.outcomes: list[str] = []
        self._open = False

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        self._open = True
        try:
            yield
        except BaseException:
            self.outcomes.append("rolled back")
            raise
        else:
            self.outcomes.append("committed")
        finally:
            self._open = False

    def in_unit_of_work(self) -> bool:
        return self._open


class Ran:
    """A handler that records that it ran and answers a payload of ``size`` data bytes."""

    def __init__(self, size: int = 0) -> None:
        self.calls = 0
        self.size = size

    def __call__(self, ctx: RequestContext, payload: Item) -> Item:
        self.calls += 1
        return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.bytes_(T.DATA, b"r" * self.size)])


def _ctx(store: FakeStore, version: tuple[int, int] = (2, 1), **budgets: object) -> RequestContext:
    services = Services(keyhsm=None, store=store, policy=None, budgets=Budgets(**budgets))  # type: ignore[arg-type]
    return RequestContext(services=services, identity=Identity("mallory"), peer="test", version=version)


def _items(*ops: int, payload: Item | None = None) -> list[BatchItem]:
    return [BatchItem(op, None, payload) for op in ops]


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> dict[int, Ran]:
    ran = {op: Ran() for op in (Operation.CREATE.value, Operation.CREATE_KEY_PAIR.value, Operation.DERIVE_KEY.value,
                                Operation.RNG_RETRIEVE.value)}
    for op, handler in ran.items():
        monkeypatch.setitem(dispatch.HANDLERS, op, handler)
    return ran


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every reading of the Undo budget's clock advances it by one second."""
    now = [0.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(dispatch, "_clock", tick)
    return now


def _statuses(ctx: RequestContext, items: list[BatchItem], option: Bec = Bec.UNDO) -> list[tuple[int, int | None]]:
    response = dispatch.process(ctx, Request(version=ctx.version, batch_items=items, batch_error_option=option.value))
    return [(r.status, r.reason) for r in response.results]


# -- Undo batches on SQLite: the write lock ----------------------------------------------------------
PBKDF2 = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.enum(T.DERIVATION_METHOD, DerivationMethod.PBKDF2)])
HMAC = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.enum(T.DERIVATION_METHOD, DerivationMethod.HMAC)])


def test_undo_batch_with_slow_items_is_refused_before_anything_runs_on_sqlite(handlers: dict[int, Ran]) -> None:
    store = FakeStore(single_writer=True)
    items = [*_items(Operation.CREATE.value), *_items(Operation.DERIVE_KEY.value, Operation.DERIVE_KEY.value,
                                                       payload=PBKDF2)]
    out = _statuses(_ctx(store), items)
    assert out == [(UNDONE, None), (FAILED, ResultReason.SERVER_LIMIT_EXCEEDED.value)]
    assert handlers[Operation.CREATE.value].calls == 0 and handlers[Operation.DERIVE_KEY.value].calls == 0
    assert store.outcomes == []  # no transaction, so no lock, was ever taken
    # Key-pair generation likewise; in 1.x the reason is General Failure.
    out = _statuses(_ctx(store, version=(1, 4)), _items(Operation.CREATE_KEY_PAIR.value))
    assert out == [(FAILED, ResultReason.GENERAL_FAILURE.value)]


def test_undo_batch_controls_fast_items_on_sqlite_and_everything_on_postgresql(handlers: dict[int, Ran]) -> None:
    # A DeriveKey by HMAC is one operation, not slow work: it runs, and the batch commits.
    store = FakeStore(single_writer=True)
    items = [*_items(Operation.CREATE.value), *_items(Operation.DERIVE_KEY.value, payload=HMAC)]
    assert _statuses(_ctx(store), items) == [(OK, None), (OK, None)]
    assert store.outcomes == ["committed"]
    # PostgreSQL locks only the rows a batch writes: the slow batch runs as before.
    pg = FakeStore(single_writer=False)
    items = [*_items(Operation.CREATE.value), *_items(Operation.DERIVE_KEY.value, payload=PBKDF2),
             *_items(Operation.CREATE_KEY_PAIR.value)]
    assert _statuses(_ctx(pg), items) == [(OK, None)] * 3
    assert pg.outcomes == ["committed"]


def test_undo_batch_past_its_lock_budget_is_undone_between_items(handlers: dict[int, Ran], clock: list[float]) -> None:
    store = FakeStore(single_writer=True)
    create = handlers[Operation.CREATE.value]
    # The clock advances 1 s per reading: item 2 starts 1 s in (within 1.5 s), item 3 2 s in.
    out = _statuses(_ctx(store, undo_lock_seconds=1.5), _items(*[Operation.CREATE.value] * 5))
    assert out == [(UNDONE, None), (UNDONE, None), (FAILED, ResultReason.SERVER_LIMIT_EXCEEDED.value)]
    assert create.calls == 2  # the third and later items never ran
    assert store.outcomes == ["rolled back"]
    # Control: a budget the batch fits in commits every item.
    create.calls = 0
    out = _statuses(_ctx(store, undo_lock_seconds=10.0), _items(*[Operation.CREATE.value] * 5))
    assert out == [(OK, None)] * 5 and create.calls == 5 and store.outcomes[-1] == "committed"
    # PostgreSQL: no lock budget.
    pg = FakeStore(single_writer=False)
    assert _statuses(_ctx(pg, undo_lock_seconds=1.5), _items(*[Operation.CREATE.value] * 5)) == [(OK, None)] * 5


# -- server.max_response_size ------------------------------------------------------------------------
def test_items_past_the_response_budget_are_refused_as_they_are_produced(handlers: dict[int, Ran]) -> None:
    rng = handlers[Operation.RNG_RETRIEVE.value]
    rng.size = 3000
    store = FakeStore(single_writer=True)
    ctx = _ctx(store, max_response_size=8192)
    response = dispatch.process(ctx, Request(version=(2, 1), batch_items=_items(*[Operation.RNG_RETRIEVE.value] * 6),
                                             batch_error_option=Bec.CONTINUE.value))
    too_large = (FAILED, ResultReason.RESPONSE_TOO_LARGE.value)
    assert [(r.status, r.reason) for r in response.results] == [(OK, None)] * 2 + [too_large] * 4
    # The refused items' payloads were dropped at once, and the message fits the budget.
    assert all(r.payload is None for r in response.results[2:])
    assert len(dispatch._fit(response, None)) <= 8192
    # In an Undo batch, an item that does not fit undoes the batch.
    out = _statuses(ctx, _items(*[Operation.RNG_RETRIEVE.value] * 6))
    assert out == [(UNDONE, None)] * 2 + [too_large]
    assert store.outcomes[-1] == "rolled back"
    # The client's Maximum Response Size, when smaller, is the budget.
    response = dispatch.process(ctx, Request(version=(2, 1), batch_items=_items(Operation.RNG_RETRIEVE.value),
                                             maximum_response_size=1024))
    assert [(r.status, r.reason) for r in response.results] == [too_large]


def test_results_within_the_response_budget_are_untouched(handlers: dict[int, Ran]) -> None:
    handlers[Operation.RNG_RETRIEVE.value].size = 3000
    ctx = _ctx(FakeStore(single_writer=True), max_response_size=64 * 1024)
    response = dispatch.process(ctx, Request(version=(2, 1), batch_items=_items(*[Operation.RNG_RETRIEVE.value] * 6)))
    assert [r.status for r in response.results] == [OK] * 6
    assert all(r.payload is not None and r.payload.value_of(T.DATA.value) == b"r" * 3000 for r in response.results)


def test_encoded_size_matches_the_encoder() -> None:
    items = [
        ttlv.text(T.UNIQUE_IDENTIFIER, "abc"), ttlv.text(T.UNIQUE_IDENTIFIER, "ünïcode" * 3),
        ttlv.bytes_(T.DATA, b"x" * 13), ttlv.integer(T.DATA_LENGTH, 3), ttlv.long_integer(T.USAGE_LIMITS_COUNT, 9),
        ttlv.enum(T.OBJECT_TYPE, 1), ttlv.boolean(T.INIT_INDICATOR, True), ttlv.date_time(T.ACTIVATION_DATE, 7),
        Item(T.DATA.value, ttlv.Type.BIG_INTEGER, 2**200),
    ]
    for item in [*items, ttlv.struct_(T.RESPONSE_PAYLOAD, [*items, ttlv.struct_(T.ATTRIBUTES, items)])]:
        assert ttlv.encoded_size(item) == len(ttlv.encode(item))


# -- multi-part streams: per identity and in all (a real SQLite store: streams live in the database) --
@pytest.fixture
def stream_store(tmp_path: Path) -> Iterator[Store]:
    from kmip_bridge.store import migrate

    store = Store(f"sqlite:///{tmp_path / 'streams.db'}")
    migrate.upgrade(store.engine)
    yield store
    store.close()


def _open(ctx: RequestContext, size: int) -> bytes:
    from kmip_bridge.operations import streams

    s = streams.new(ctx, Operation.HASH.value, None)
    streams.feed(ctx, s, b"d" * size)
    return streams.save(ctx, s)


def _refused(call: object) -> str:
    from kmip_bridge.protocol.errors import KmipError

    with pytest.raises(KmipError) as err:
        call()  # type: ignore[operator]
    assert err.value.reason == ResultReason.SERVER_LIMIT_EXCEEDED.value
    return err.value.message


def _clear(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM streams"))


def test_one_identity_cannot_take_the_stream_table(stream_store: Store) -> None:
    budgets = {"max_streams": 6, "max_streams_per_identity": 3, "max_stream_bytes": 100,
               "max_stream_bytes_per_identity": 200, "max_stream_bytes_total": 300}
    mallory, bob = _ctx(stream_store, **budgets), _ctx(stream_store, **budgets)  # type: ignore[arg-type]
    bob.identity = Identity("bob")
    for _ in range(3):
        _open(mallory, 1)
    assert "max_streams_per_identity" in _refused(lambda: _open(mallory, 1))
    _open(bob, 1)  # control: another client still opens streams
    # One stream may buffer max_stream_bytes; an identity max_stream_bytes_per_identity in all.
    _clear(stream_store)
    assert "max_stream_bytes" in _refused(lambda: _open(mallory, 101))
    _open(mallory, 100)
    _open(mallory, 100)
    assert "max_stream_bytes_per_identity" in _refused(lambda: _open(mallory, 1))
    # The total: bob fits his 100 bytes, then the table is full for everyone.
    _open(bob, 100)
    carol = _ctx(stream_store, **budgets)  # type: ignore[arg-type]
    carol.identity = Identity("carol")
    assert "on this server" in _refused(lambda: _open(carol, 1))
    _clear(stream_store)
    _open(carol, 1)


def test_a_stream_row_is_sealed_and_bound_to_its_owner(stream_store: Store) -> None:
    """What a database reader sees of a stream: no input in the clear, and a row moved to another
    owner (or a blob moved to another row) no longer opens."""
    from kmip_bridge.operations import streams
    from kmip_bridge.protocol.errors import KmipError

    mallory = _ctx(stream_store)  # type: ignore[arg-type]
    s = streams.new(mallory, Operation.HASH.value, None)
    streams.feed(mallory, s, b"MARKER-secret-input")
    first = streams.save(mallory, s)
    other = streams.save(mallory, streams.new(mallory, Operation.HASH.value, None))
    with stream_store.engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT id, owner, sealed FROM streams")).all()
        chunks = conn.execute(sa.text("SELECT id, sealed FROM stream_chunks")).all()
    assert len(rows) == 2 and len(chunks) == 1
    assert all(b"MARKER" not in bytes(r.sealed) for r in [*rows, *chunks])
    assert all(first.hex() not in r.id and other.hex() not in r.id for r in rows)  # ids are one-way
    assert bytes(streams.take(mallory, first, Operation.HASH.value).data) == b"MARKER-secret-input"
    # A row handed to another owner in the database does not open for them (the AAD names the owner).
    bob = _ctx(stream_store)  # type: ignore[arg-type]
    bob.identity = Identity("bob")
    with stream_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE streams SET owner = 'bob'"))
    with pytest.raises(KmipError):
        streams.take(bob, first, Operation.HASH.value)
    with stream_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE streams SET owner = 'mallory'"))
    # Swap the two sealed blobs: each row now fails its AAD (bound to the row id).
    with stream_store.engine.begin() as conn:
        a, b = conn.execute(sa.text("SELECT id, sealed, nonce FROM streams")).all()
        for mine, theirs in ((a, b), (b, a)):
            conn.execute(sa.text("UPDATE streams SET sealed = :s, nonce = :n WHERE id = :id"),
                         {"s": theirs.sealed, "n": theirs.nonce, "id": mine.id})
    for value in (first, other):
        with pytest.raises(KmipError) as err:
            streams.take(mallory, value, Operation.HASH.value)
        assert err.value.reason == ResultReason.INVALID_CORRELATION_VALUE.value


def test_the_response_budget_counts_each_item_exactly() -> None:
    from kmip_bridge.protocol.messages import Response, Result, build_response

    payload = ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "ü-id"), ttlv.bytes_(T.DATA, b"x" * 9)])
    results = [
        Result(Operation.GET.value, b"batch-id-1", payload=payload),
        Result(Operation.GET.value, None, status=FAILED, reason=ResultReason.ITEM_NOT_FOUND.value, message="nö"),
    ]
    empty = len(ttlv.encode(build_response(Response(version=(2, 1)), now=0)))
    for r in results:
        whole = len(ttlv.encode(build_response(Response(version=(2, 1), results=[r]), now=0)))
        assert dispatch._item_size(r) == whole - empty


def test_a_long_stream_is_kept_in_few_chunks_and_a_missing_one_is_noticed(stream_store: Store) -> None:
    """Each part stores only what it brought (one chunk); past MAX_CHUNKS they are merged, so a
    read stays a few rows. A chunk deleted from the database makes the stream unusable, never
    silently shorter."""
    from kmip_bridge.operations import streams
    from kmip_bridge.protocol.errors import KmipError

    ctx = _ctx(stream_store)  # type: ignore[arg-type]
    s = streams.new(ctx, Operation.HASH.value, None)
    streams.feed(ctx, s, b"part-0;")
    value = streams.save(ctx, s)
    for i in range(1, 3 * streams.MAX_CHUNKS):
        s = streams.take(ctx, value, Operation.HASH.value)
        streams.feed(ctx, s, f"part-{i};".encode())
        if i % 7 == 0:
            streams.feed(ctx, s, b"")  # a part without input adds no chunk
        streams.save(ctx, s)
        with stream_store.engine.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM stream_chunks")).scalar_one() <= streams.MAX_CHUNKS
    s = streams.take(ctx, value, Operation.HASH.value)
    assert bytes(s.data) == b"".join(f"part-{i};".encode() for i in range(3 * streams.MAX_CHUNKS))
    with stream_store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM stream_chunks WHERE seq = (SELECT max(seq) FROM stream_chunks)"))
    with pytest.raises(KmipError) as err:
        streams.take(ctx, value, Operation.HASH.value)
    assert err.value.reason == ResultReason.INVALID_CORRELATION_VALUE.value
