"""Resource budgets against a real server (issue 12: no client holds a shared resource for long):
slow work in an Undo batch on SQLite, the multi-part stream table, the response size, malformed
Locate criteria. Each hostile case has its control. Unit side: tests/unit/test_budgets.py."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kmip.core import enums
from kmip.core.enums import BatchErrorContinuationOption, Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type

from .conftest import Instance, Server, make_instance

pytestmark = pytest.mark.e2e

V14, V21 = (1, 4), (2, 1)
UNDO = BatchErrorContinuationOption.UNDO.value
MAX_RESPONSE = 1024 * 1024
SLOW_ITERATIONS = 2_000_000  # the PBKDF2 iteration cap (operations/derive.py): seconds per item


class Conn:
    def __init__(self, server: Server, instance: Instance, name: str) -> None:
        folder = instance.dir / "clients" / name
        ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.raw = RawClient("127.0.0.1", server.port, ctx, timeout=300)

    def batch(self, items: list[tuple[Operation, list[Item]]], version: tuple[int, int] = V14,
              option: int | None = None) -> list[Item]:
        msg = request([(op.value, ttlv.struct_(T.REQUEST_PAYLOAD, f)) for op, f in items], version, option)
        return self.raw.call(msg).all(T.BATCH_ITEM.value)

    def ok(self, op: Operation, *fields: Item, version: tuple[int, int] = V14) -> Item:
        bi = self.batch([(op, list(fields))], version)[0]
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.get(T.RESPONSE_PAYLOAD.value)  # type: ignore[return-value]

    def fails(self, reason: ResultReason, op: Operation, *fields: Item, version: tuple[int, int] = V14) -> str:
        bi = self.batch([(op, list(fields))], version)[0]
        assert _status(bi) == (ResultStatus.OPERATION_FAILED.value, reason.value), bi.value_of(T.RESULT_MESSAGE.value)
        return bi.value_of(T.RESULT_MESSAGE.value) or ""  # type: ignore[return-value]

    def close(self) -> None:
        self.raw.close()


def _status(bi: Item) -> tuple[int, int | None]:
    return bi.value_of(T.RESULT_STATUS.value), bi.value_of(T.RESULT_REASON.value)  # type: ignore[return-value]


def a1(name: str, value: Item) -> Item:
    return ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, name), value])


def uid_(uid: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, uid)


def _create(name: str, mask: int = enums.CryptographicUsageMask.ENCRYPT.value) -> list[Item]:
    return [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
        a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
        a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 256)),
        a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, mask)),
        a1("Name", ttlv.struct_(T.ATTRIBUTE_VALUE, [
            ttlv.text(T.NAME_VALUE, name), ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])),
    ])]


def _password(conn: Conn) -> str:
    out = conn.ok(Operation.REGISTER, ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
                  ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
                      a1("Cryptographic Usage Mask",
                         ttlv.integer(T.ATTRIBUTE_VALUE, enums.CryptographicUsageMask.DERIVE_KEY.value))]),
                  ttlv.struct_(T.SECRET_DATA, [
                      ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
                      ttlv.struct_(T.KEY_BLOCK, [
                          ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
                          ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, b"correct horse")])])]))
    uid: str = out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[assignment]
    conn.ok(Operation.ACTIVATE, uid_(uid))
    return uid


def _derive(base: str, method: enums.DerivationMethod, iterations: int = SLOW_ITERATIONS) -> list[Item]:
    params = [ttlv.bytes_(T.SALT, b"NaCl-budget")]
    if method == enums.DerivationMethod.PBKDF2:
        params.append(ttlv.integer(T.ITERATION_COUNT, iterations))
    else:
        params += [ttlv.bytes_(T.DERIVATION_DATA, b"context"),
                   ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [
                       ttlv.enum(T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA_256)])]
    return [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), uid_(base),
            ttlv.enum(T.DERIVATION_METHOD, method),
            ttlv.struct_(T.DERIVATION_PARAMETERS, params),
            ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
                a1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 256)),
                a1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES))])]


def _located(conn: Conn, name: str) -> list[str]:
    out = conn.ok(Operation.LOCATE, a1("Name", ttlv.struct_(T.ATTRIBUTE_VALUE, [
        ttlv.text(T.NAME_VALUE, name), ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])))
    return [u.value for u in out.all(T.UNIQUE_IDENTIFIER.value)]  # type: ignore[misc]


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    return make_instance(tmp_path_factory.mktemp("budgets"), None)


@pytest.fixture(scope="module")
def server(instance: Instance) -> Iterator[Server]:
    for name in ("mallory", "bob"):
        instance.client(name)
    # The per-request work budget (server.max_request_work, tested in test_export_rules.py) is
    # raised here so that the red-team batch of two maximal PBKDF2 items is admitted by it and
    # these tests exercise the write lock, not that budget.
    srv = instance.start(max_response_size=MAX_RESPONSE, max_streams_per_identity=4,
                         max_request_work=4 * 4 * SLOW_ITERATIONS)
    yield srv
    assert srv.stop() == 0, "".join(srv.log[-20:])


@pytest.fixture
def conns(server: Server, instance: Instance) -> Iterator[dict[str, Conn]]:
    out = {name: Conn(server, instance, name) for name in ("mallory", "bob")}
    yield out
    for c in out.values():
        c.close()


def _audited(instance: Instance, identity: str, operation: str) -> int:
    """How many successful ``operation`` items of ``identity`` the audit file records so far."""
    path = instance.dir / "audit.jsonl"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return sum((r := json.loads(line)).get("identity") == identity and r.get("operation") == operation
               and r.get("status") == "SUCCESS" for line in lines)


def _until(condition: Callable[[], bool]) -> None:
    """Waits for an event another thread or the server brings about (bounded, so that a broken
    server fails the test rather than hanging it)."""
    for _ in range(6000):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the awaited event never happened")


# -- 1. slow work never runs under SQLite's write lock --------------------------------------------
def test_undo_batch_with_slow_work_cannot_stall_other_clients_writes(
    conns: dict[str, Conn], server: Server, instance: Instance
) -> None:
    """The red-team batch: Undo [Create, DeriveKey PBKDF2 (2,000,000 iterations) x2] held the write
    lock of every worker for 32 s. It is now refused before anything runs; if it ever runs again,
    bob's Create must still complete while it does (ordering by events, not by a clock)."""
    mallory, bob = conns["mallory"], conns["bob"]
    password = _password(mallory)
    done = threading.Event()
    answers: list[list[Item]] = []

    def hostile() -> None:
        try:
            answers.append(mallory.batch([(Operation.CREATE, _create("undo-hostile")),
                                          (Operation.DERIVE_KEY, _derive(password, enums.DerivationMethod.PBKDF2)),
                                          (Operation.DERIVE_KEY, _derive(password, enums.DerivationMethod.PBKDF2))],
                                         V21, UNDO))
        finally:
            done.set()

    creates = _audited(instance, "mallory", "CREATE")
    thread = threading.Thread(target=hostile)
    thread.start()
    # Wait until the hostile batch is answered or its Create has run (it then holds the lock).
    _until(lambda: done.is_set() or _audited(instance, "mallory", "CREATE") > creates)
    running = not done.is_set()
    started = time.perf_counter()
    bob.ok(Operation.CREATE, *_create("bob-during-hostile-batch"))
    print(f"hostile Undo batch answered before bob's Create: {not running}; bob's Create "
          f"{(time.perf_counter() - started) * 1000:.0f} ms")  # informational, not asserted
    if running:
        assert not done.is_set(), "bob's Create waited for the hostile Undo batch to finish"
    thread.join(timeout=300)
    out = answers[0]
    assert [_status(bi) for bi in out] == [(ResultStatus.OPERATION_UNDONE.value, None),
                                           (ResultStatus.OPERATION_FAILED.value,
                                            ResultReason.SERVER_LIMIT_EXCEEDED.value)]
    assert "Undo" in out[1].value_of(T.RESULT_MESSAGE.value)  # type: ignore[operator]
    assert _located(mallory, "undo-hostile") == []  # all or nothing: the Create left nothing
    assert server.alive()


def test_slow_work_outside_undo_runs_while_other_clients_write(
    conns: dict[str, Conn], instance: Instance
) -> None:
    """The legitimate path for the same work: without the Undo option each item is its own short
    transaction and the PBKDF2 runs with no lock held; bob's Create completes during it."""
    mallory, bob = conns["mallory"], conns["bob"]
    password = _password(mallory)
    done = threading.Event()
    answers: list[list[Item]] = []

    def slow() -> None:
        try:
            answers.append(mallory.batch([(Operation.CREATE, _create("slow-marker")),
                                          (Operation.DERIVE_KEY, _derive(password, enums.DerivationMethod.PBKDF2)),
                                          (Operation.DERIVE_KEY, _derive(password, enums.DerivationMethod.PBKDF2))]))
        finally:
            done.set()

    creates = _audited(instance, "mallory", "CREATE")
    began = time.perf_counter()
    thread = threading.Thread(target=slow)
    thread.start()
    # The marker Create is audited as soon as it ran: the PBKDF2 items are now running.
    _until(lambda: _audited(instance, "mallory", "CREATE") > creates)
    started = time.perf_counter()
    bob.ok(Operation.CREATE, *_create("bob-during-slow-batch"))
    took = time.perf_counter() - started
    assert not done.is_set(), "bob's Create waited for another client's slow batch"
    thread.join(timeout=300)
    print(f"bob's Create {took * 1000:.0f} ms while the slow batch ran "
          f"{time.perf_counter() - began:.1f} s")  # informational, not asserted
    assert [_status(bi)[0] for bi in answers[0]] == [ResultStatus.SUCCESS.value] * 3


def test_undo_batch_of_fast_items_still_commits_on_sqlite(conns: dict[str, Conn]) -> None:
    mallory = conns["mallory"]
    password = _password(mallory)
    out = mallory.batch([(Operation.CREATE, _create("undo-fast")),
                         (Operation.DERIVE_KEY, _derive(password, enums.DerivationMethod.HMAC))], V21, UNDO)
    assert [_status(bi)[0] for bi in out] == [ResultStatus.SUCCESS.value] * 2
    assert len(_located(mallory, "undo-fast")) == 1


def test_postgresql_undo_batch_with_pbkdf2_is_unchanged(
    tmp_path_factory: pytest.TempPathFactory, pg_database
) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL locks only the rows a batch writes: an Undo batch with PBKDF2 runs (and commits)."""
    inst = make_instance(tmp_path_factory.mktemp("budgets-pg"), pg_database())
    inst.client("mallory")
    srv = inst.start()
    try:
        mallory = Conn(srv, inst, "mallory")
        try:
            password = _password(mallory)
            out = mallory.batch([(Operation.CREATE, _create("pg-undo")),
                                 (Operation.DERIVE_KEY, _derive(password, enums.DerivationMethod.PBKDF2, 1000))],
                                V21, UNDO)
            assert [_status(bi)[0] for bi in out] == [ResultStatus.SUCCESS.value] * 2
            assert len(_located(mallory, "pg-undo")) == 1
        finally:
            mallory.close()
    finally:
        assert srv.stop() == 0


# -- 2. the stream table --------------------------------------------------------------------------
def _hash_init(conn: Conn, version: tuple[int, int] = V21) -> Item:
    bi = conn.batch([(Operation.HASH, [
        ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA_256)]),
        ttlv.bytes_(T.DATA, b"part"), ttlv.boolean(T.INIT_INDICATOR, True)])], version)[0]
    return bi


def test_one_client_cannot_fill_the_stream_table(conns: dict[str, Conn]) -> None:
    mallory, bob = conns["mallory"], conns["bob"]
    opened = [_hash_init(mallory) for _ in range(4)]  # server.max_streams_per_identity: 4
    assert all(_status(bi)[0] == ResultStatus.SUCCESS.value for bi in opened)
    refused = _hash_init(mallory)
    assert _status(refused) == (ResultStatus.OPERATION_FAILED.value, ResultReason.SERVER_LIMIT_EXCEEDED.value)
    assert "max_streams_per_identity" in refused.value_of(T.RESULT_MESSAGE.value)  # type: ignore[operator]
    assert _status(_hash_init(mallory, V14))[1] == ResultReason.GENERAL_FAILURE.value  # 1.x has no such reason
    # Control: another client still opens (and finishes) streams.
    first = _hash_init(bob)
    assert _status(first)[0] == ResultStatus.SUCCESS.value
    corr = first.get(T.RESPONSE_PAYLOAD.value).value_of(T.CORRELATION_VALUE.value)  # type: ignore[union-attr]
    last = bob.ok(Operation.HASH, ttlv.bytes_(T.DATA, b"2"), ttlv.bytes_(T.CORRELATION_VALUE, corr),  # type: ignore[arg-type]
                  ttlv.boolean(T.FINAL_INDICATOR, True), version=V21)
    assert last.value_of(T.DATA.value) == hashlib.sha256(b"part2").digest()
    # Finishing one of mallory's streams frees a place for her.
    corr = opened[0].get(T.RESPONSE_PAYLOAD.value).value_of(T.CORRELATION_VALUE.value)  # type: ignore[union-attr]
    mallory.ok(Operation.HASH, ttlv.bytes_(T.CORRELATION_VALUE, corr), ttlv.boolean(T.FINAL_INDICATOR, True),  # type: ignore[arg-type]
               version=V21)
    assert _status(_hash_init(mallory))[0] == ResultStatus.SUCCESS.value


# -- 3. response size -----------------------------------------------------------------------------
def test_response_size_is_capped_by_the_server(conns: dict[str, Conn]) -> None:
    """The red-team request: 300 x RNG Retrieve(1 MiB) in 14 KB gave a 315 MB response."""
    mallory = conns["mallory"]
    mallory.fails(ResultReason.INVALID_FIELD, Operation.RNG_RETRIEVE, ttlv.integer(T.DATA_LENGTH, 1024 * 1024))
    rng = [ttlv.integer(T.DATA_LENGTH, 64 * 1024)]
    msg = request([(Operation.RNG_RETRIEVE.value, ttlv.struct_(T.REQUEST_PAYLOAD, rng))] * 300, V21,
                  BatchErrorContinuationOption.CONTINUE.value)
    raw = mallory.raw.send_raw(ttlv.encode(msg))
    assert raw is not None and len(raw) <= MAX_RESPONSE
    print(f"request {len(ttlv.encode(msg))} bytes, response {len(raw)} bytes")  # informational
    items = ttlv.decode(raw).all(T.BATCH_ITEM.value)
    statuses = [_status(bi) for bi in items]
    fitted = statuses.count((ResultStatus.SUCCESS.value, None))
    assert 0 < fitted < 16  # 1 MiB holds at most 15 results of 64 KiB
    assert statuses[fitted:] == [(ResultStatus.OPERATION_FAILED.value, ResultReason.RESPONSE_TOO_LARGE.value)] * (
        300 - fitted)
    # Control: a batch within the budget gets every result.
    small = request([(Operation.RNG_RETRIEVE.value, ttlv.struct_(T.REQUEST_PAYLOAD, rng))] * 4, V21)
    out = mallory.raw.call(small).all(T.BATCH_ITEM.value)
    assert [len(bi.get(T.RESPONSE_PAYLOAD.value).value_of(T.DATA.value)) for bi in out] == [64 * 1024] * 4  # type: ignore[union-attr,arg-type]


# -- 4. malformed Locate criteria -----------------------------------------------------------------
def test_malformed_locate_criteria_are_invalid_field(conns: dict[str, Conn], server: Server) -> None:
    mallory = conns["mallory"]
    before = len(server.log)
    huge_mask = a1("Cryptographic Usage Mask", Item(T.ATTRIBUTE_VALUE.value, Type.BIG_INTEGER, 2**200))
    long_mask = a1("Cryptographic Usage Mask", ttlv.long_integer(T.ATTRIBUTE_VALUE, 2**62))
    name_range = [a1("Name", ttlv.date_time(T.ATTRIBUTE_VALUE, 1)), a1("Name", ttlv.date_time(T.ATTRIBUTE_VALUE, 2))]
    state_text = a1("State", ttlv.text(T.ATTRIBUTE_VALUE, "Active"))
    for version in (V14, V21):
        for criteria in ([huge_mask], [long_mask], name_range, [state_text]):
            message = mallory.fails(ResultReason.INVALID_FIELD, Operation.LOCATE, *criteria, version=version)
            assert "Locate" in message
        mallory.fails(ResultReason.INVALID_FIELD, Operation.LOCATE, ttlv.integer(T.OFFSET_ITEMS, -1), version=version)
    assert not any('"level": "ERROR"' in line for line in server.log[before:])
    # Control: the same criteria, well typed, match.
    mallory.ok(Operation.CREATE, *_create("locate-control"))
    assert len(_located(mallory, "locate-control")) == 1
    mask = a1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, enums.CryptographicUsageMask.ENCRYPT.value))
    out = mallory.ok(Operation.LOCATE, mask, a1("State", ttlv.enum(T.ATTRIBUTE_VALUE, enums.State.PRE_ACTIVE)))
    assert len(out.all(T.UNIQUE_IDENTIFIER.value)) >= 1
