"""Several nodes, one PostgreSQL: two 'kmip-bridge serve' processes of one instance (one token,
one KEK, one database), on different ports, with clients hammering the same objects through both.

What a user of a cluster checks: an object made on one node is served by the other; a KEK rotated
by the CLI is used by both; concurrent changes of the same object through both nodes are all kept
or refused with a clear KMIP error — never silently lost; a Name is unique across nodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from kmip.core import enums
from kmip.core.enums import BatchErrorContinuationOption, Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server, free_port, make_instance, run_cli, start_node

pytestmark = pytest.mark.e2e

V14 = (1, 4)
THREADS_PER_NODE = 4
ADDS_PER_THREAD = 5
CONFLICT = "changed while this request ran"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_database: Callable[[], str]
) -> Iterator[tuple[Instance, Server, Server]]:
    instance = make_instance(tmp_path_factory.mktemp("multinode"), pg_database())
    node_a = instance.start()
    node_b = start_node(instance, free_port())
    yield instance, node_a, node_b
    codes = (node_b.stop(), node_a.stop())
    assert codes == (0, 0), "a node did not exit cleanly:\n" + "".join(node_a.log[-10:] + node_b.log[-10:])


def connect(instance: Instance, server: Server) -> RawClient:
    folder = instance.dir / "clients" / "admin"
    ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
    return RawClient("127.0.0.1", server.port, ctx)


def call(c: RawClient, op: Operation, fields: list[Item], option: BatchErrorContinuationOption | None = None,
         more: Sequence[tuple[Operation, list[Item]]] = ()) -> list[Item]:
    items = [(op, fields), *more]
    msg = request([(o.value, ttlv.struct_(T.REQUEST_PAYLOAD, f)) for o, f in items], version=V14,
                  batch_error_option=option.value if option else None)
    return c.call(msg).all(T.BATCH_ITEM.value)


def ok(c: RawClient, op: Operation, fields: list[Item]) -> Item:
    bi = call(c, op, fields)[0]
    assert status(bi) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    return bi.get(T.RESPONSE_PAYLOAD.value)  # type: ignore[return-value]


def status(bi: Item) -> int:
    return bi.value_of(T.RESULT_STATUS.value)  # type: ignore[return-value]


def attr(name: str, value: Item, index: int | None = None) -> Item:
    parts = [ttlv.text(T.ATTRIBUTE_NAME, name)]
    if index is not None:
        parts.append(ttlv.integer(T.ATTRIBUTE_INDEX, index))
    return ttlv.struct_(T.ATTRIBUTE, [*parts, value])


def name_value(text: str) -> Item:
    return ttlv.struct_(T.ATTRIBUTE_VALUE, [ttlv.text(T.NAME_VALUE, text),
                                            ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])


def uid_(uid: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, uid)


def create(c: RawClient, *extra: Item) -> str:
    attrs = [attr("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
             attr("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 256)), *extra]
    out = ok(c, Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                                   ttlv.struct_(T.TEMPLATE_ATTRIBUTE, attrs)])
    return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]


def key_bytes(c: RawClient, uid: str) -> bytes:
    out = ok(c, Operation.GET, [uid_(uid)])
    value = out.get(T.SYMMETRIC_KEY.value).get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value)  # type: ignore[union-attr]
    return value.value_of(T.KEY_MATERIAL.value)  # type: ignore[return-value,union-attr]


def attributes_of(c: RawClient, uid: str) -> list[tuple[str, int, object]]:
    out = ok(c, Operation.GET_ATTRIBUTES, [uid_(uid)])
    found = []
    for a in out.all(T.ATTRIBUTE.value):
        index = a.value_of(T.ATTRIBUTE_INDEX.value, 0)
        found.append((a.value_of(T.ATTRIBUTE_NAME.value), index, a.get(T.ATTRIBUTE_VALUE.value).value))  # type: ignore[union-attr]
    return found  # type: ignore[return-value]


def locate_by_name(c: RawClient, name: str) -> list[str]:
    out = ok(c, Operation.LOCATE, [attr("Name", name_value(name))])
    return [u.value for u in out.all(T.UNIQUE_IDENTIFIER.value)]  # type: ignore[misc]


def state_of(c: RawClient, uid: str) -> int:
    return next(v for n, _, v in attributes_of(c, uid) if n == "State")  # type: ignore[return-value]


# -- tests ---------------------------------------------------------------------------------------------
def test_made_on_one_node_served_by_the_other(cluster: tuple[Instance, Server, Server]) -> None:
    instance, node_a, node_b = cluster
    with connect(instance, node_a) as a, connect(instance, node_b) as b:
        uid = create(a, attr("Name", name_value("made-on-a")))
        assert key_bytes(b, uid) == key_bytes(a, uid)
        assert len(key_bytes(b, uid)) == 32
        assert locate_by_name(b, "made-on-a") == [uid]
        # The ID placeholder is per request message, whichever node serves it.
        created, activated = call(b, Operation.CREATE, [
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
            ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
                attr("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
                attr("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 128))])],
            more=[(Operation.ACTIVATE, [])])
        assert status(activated) == ResultStatus.SUCCESS.value, activated.value_of(T.RESULT_MESSAGE.value)
        placeholder_uid = created.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr]
        assert state_of(a, placeholder_uid) == enums.State.ACTIVE.value  # type: ignore[arg-type]
        # A message without a Unique Identifier on the other node has no placeholder to inherit.
        alone = call(a, Operation.ACTIVATE, [])[0]
        assert status(alone) == ResultStatus.OPERATION_FAILED.value


def test_ids_are_unique_across_nodes(cluster: tuple[Instance, Server, Server]) -> None:
    instance, node_a, node_b = cluster

    def make(server: Server) -> list[str]:
        with connect(instance, server) as c:
            return [create(c) for _ in range(20)]

    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(make, [node_a, node_b, node_a, node_b]))
    uids = [u for batch in batches for u in batch]
    assert len(set(uids)) == 80
    with connect(instance, node_a) as a:
        for uid in uids[::10]:
            assert len(key_bytes(a, uid)) == 32


def _kek_table(instance: Instance) -> dict[str, tuple[str, int]]:
    out = run_cli("keyhsm", "list", "--config", str(instance.config)).stdout
    table = {}
    for line in out.splitlines():
        label, _kind, state, count = line.split()
        table[label] = (state, int(count))
    return table


def test_kek_rotated_by_the_cli_is_used_by_both_nodes(cluster: tuple[Instance, Server, Server]) -> None:
    instance, node_a, node_b = cluster
    with connect(instance, node_a) as a, connect(instance, node_b) as b:
        before = create(a)
        run_cli("keyhsm", "rotate", "--config", str(instance.config))
        table = _kek_table(instance)
        current = [label for label, (state, _) in table.items() if state == "current"]
        assert len(current) == 1 and current[0] != "default-v1", table
        assert table[current[0]][1] == 0
        # keyhsm.kek_refresh_seconds is 0 in tests: each node sees the new version at its next seal.
        after = [create(a), create(b)]
        table = _kek_table(instance)
        assert table[current[0]][1] == 2, table
        for uid in [before, *after]:  # old and new versions open on both nodes
            assert key_bytes(a, uid) == key_bytes(b, uid)


def test_concurrent_add_attribute_through_both_nodes_loses_nothing(
    cluster: tuple[Instance, Server, Server],
) -> None:
    instance, node_a, node_b = cluster
    with connect(instance, node_a) as a:
        uid = create(a)
    results: list[tuple[str, Item]] = []
    lock = threading.Lock()
    start = threading.Barrier(2 * THREADS_PER_NODE)

    def hammer(node: str, server: Server, thread: int) -> None:
        with connect(instance, server) as c:
            start.wait()
            for k in range(ADDS_PER_THREAD):
                # A distinct custom attribute, and one more instance of a shared multi-valued one
                # (the server gives each a new Attribute Index).
                name = f"x-{node}-{thread}-{k}"
                for n, value in ((name, "v"), ("x-shared", name)):
                    bi = call(c, Operation.ADD_ATTRIBUTE, [uid_(uid), attr(n, ttlv.text(T.ATTRIBUTE_VALUE, value))])[0]
                    with lock:
                        results.append((n if n != "x-shared" else f"x-shared={value}", bi))

    with ThreadPoolExecutor(2 * THREADS_PER_NODE) as pool:
        futures = [pool.submit(hammer, node, server, t)
                   for node, server in (("a", node_a), ("b", node_b)) for t in range(THREADS_PER_NODE)]
        for f in futures:
            f.result()

    expected = 2 * THREADS_PER_NODE * ADDS_PER_THREAD * 2
    assert len(results) == expected
    succeeded: dict[str, int] = {}
    for what, bi in results:
        if status(bi) == ResultStatus.SUCCESS.value:
            echoed = bi.get(T.RESPONSE_PAYLOAD.value).get(T.ATTRIBUTE.value)  # type: ignore[union-attr]
            succeeded[what] = echoed.value_of(T.ATTRIBUTE_INDEX.value, 0)  # type: ignore[union-attr,assignment]
        else:  # refused: a clear KMIP error that tells the client to retry, never a silent loss
            assert bi.value_of(T.RESULT_REASON.value) == ResultReason.GENERAL_FAILURE.value
            assert CONFLICT in bi.value_of(T.RESULT_MESSAGE.value)  # type: ignore[operator]
    with connect(instance, node_b) as b:
        stored = attributes_of(b, uid)
    custom = {n for n, _, _ in stored if n.startswith("x-") and n != "x-shared"}
    shared = {(v, i) for n, i, v in stored if n == "x-shared"}
    assert custom == {w for w in succeeded if not w.startswith("x-shared=")}
    assert shared == {(w.split("=", 1)[1], i) for w, i in succeeded.items() if w.startswith("x-shared=")}
    assert len({i for _, i in shared}) == len(shared), "two values were given the same Attribute Index"
    print(f"{len(succeeded)}/{expected} concurrent AddAttribute succeeded; the rest were refused with a retry error")


def test_concurrent_life_cycle_changes_through_both_nodes(cluster: tuple[Instance, Server, Server]) -> None:
    instance, node_a, node_b = cluster
    with connect(instance, node_a) as a:
        uids = [create(a) for _ in range(6)]

    def race(op: Operation, fields: Callable[[str], list[Item]]) -> dict[str, list[Item]]:
        """Every uid, ``op`` sent at once through two connections to each node."""
        out: dict[str, list[Item]] = {u: [] for u in uids}
        lock = threading.Lock()
        gate = threading.Barrier(4)

        def worker(server: Server) -> None:
            with connect(instance, server) as c:
                gate.wait()
                for u in uids:
                    bi = call(c, op, fields(u))[0]
                    with lock:
                        out[u].append(bi)

        with ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(worker, s) for s in (node_a, node_b, node_a, node_b)]:
                f.result()
        return out

    def exactly_one_success(outcome: dict[str, list[Item]], refusal: str) -> None:
        for u, items in outcome.items():
            wins = [bi for bi in items if status(bi) == ResultStatus.SUCCESS.value]
            assert len(wins) == 1, (u, [bi.value_of(T.RESULT_MESSAGE.value) for bi in items])
            for bi in items:
                if bi not in wins:
                    assert refusal in bi.value_of(T.RESULT_MESSAGE.value), bi.value_of(T.RESULT_MESSAGE.value)  # type: ignore[operator]

    exactly_one_success(race(Operation.ACTIVATE, lambda u: [uid_(u)]), "only a Pre-Active object")
    reason = ttlv.struct_(T.REVOCATION_REASON, [
        ttlv.enum(T.REVOCATION_REASON_CODE, enums.RevocationReasonCode.CESSATION_OF_OPERATION)])
    exactly_one_success(race(Operation.REVOKE, lambda u: [uid_(u), reason]), "only an Active object")
    exactly_one_success(race(Operation.DESTROY, lambda u: [uid_(u)]), "already destroyed")
    with connect(instance, node_b) as b:
        for u in uids:
            assert state_of(b, u) == enums.State.DESTROYED.value
            assert status(call(b, Operation.GET, [uid_(u)])[0]) == ResultStatus.OPERATION_FAILED.value
        located = ok(b, Operation.LOCATE, [attr("State", ttlv.enum(T.ATTRIBUTE_VALUE, enums.State.DESTROYED))])
        assert set(uids) <= {i.value for i in located.all(T.UNIQUE_IDENTIFIER.value)}


def test_a_name_is_taken_once_across_nodes(cluster: tuple[Instance, Server, Server]) -> None:
    instance, node_a, node_b = cluster
    with connect(instance, node_a) as a:
        targets = [create(a) for _ in range(8)]
    rounds = 5
    outcomes: list[list[Item]] = [[] for _ in range(rounds)]
    lock = threading.Lock()
    gate = threading.Barrier(len(targets))

    def claim(i: int, uid: str) -> None:
        server = node_a if i % 2 == 0 else node_b
        with connect(instance, server) as c:
            gate.wait()
            for r in range(rounds):  # every client gives its own object the same Name at once
                bi = call(c, Operation.ADD_ATTRIBUTE, [uid_(uid), attr("Name", name_value(f"contended-{r}"))])[0]
                with lock:
                    outcomes[r].append(bi)

    with ThreadPoolExecutor(len(targets)) as pool:
        for f in [pool.submit(claim, i, u) for i, u in enumerate(targets)]:
            f.result()
    with connect(instance, node_b) as b:
        for r, items in enumerate(outcomes):
            wins = [bi for bi in items if status(bi) == ResultStatus.SUCCESS.value]
            assert len(wins) == 1, [bi.value_of(T.RESULT_MESSAGE.value) for bi in items]
            for bi in items:
                if bi is not wins[0]:
                    assert "already in use" in bi.value_of(T.RESULT_MESSAGE.value)  # type: ignore[operator]
            assert len(locate_by_name(b, f"contended-{r}")) == 1


def test_concurrent_undo_batches_through_both_nodes_are_all_or_nothing(
    cluster: tuple[Instance, Server, Server],
) -> None:
    """Batches with Batch Error Continuation Option Undo, each adding two attributes (one of its
    own, one more instance of a shared one) to the same object: each batch lands whole or not at
    all, and what the client was told matches what is stored."""
    instance, node_a, node_b = cluster
    with connect(instance, node_a) as a:
        uid = create(a)
    outcomes: list[tuple[str, list[Item]]] = []
    lock = threading.Lock()
    gate = threading.Barrier(2 * THREADS_PER_NODE)

    def batches(node: str, server: Server, thread: int) -> None:
        with connect(instance, server) as c:
            gate.wait()
            for k in range(ADDS_PER_THREAD):
                tag = f"{node}-{thread}-{k}"
                own = attr(f"x-undo-{tag}", ttlv.text(T.ATTRIBUTE_VALUE, "v"))
                shared = attr("x-undo-shared", ttlv.text(T.ATTRIBUTE_VALUE, tag))
                items = call(c, Operation.ADD_ATTRIBUTE, [uid_(uid), own], option=BatchErrorContinuationOption.UNDO,
                             more=[(Operation.ADD_ATTRIBUTE, [uid_(uid), shared])])
                with lock:
                    outcomes.append((tag, items))

    with ThreadPoolExecutor(2 * THREADS_PER_NODE) as pool:
        futures = [pool.submit(batches, node, server, t)
                   for node, server in (("a", node_a), ("b", node_b)) for t in range(THREADS_PER_NODE)]
        for f in futures:
            f.result()

    with connect(instance, node_b) as b:
        stored = attributes_of(b, uid)
    own = {n.removeprefix("x-undo-") for n, _, _ in stored if n.startswith("x-undo-") and n != "x-undo-shared"}
    shared = [v for n, _, v in stored if n == "x-undo-shared"]
    landed = set()
    for tag, items in outcomes:
        statuses = [status(bi) for bi in items]
        if statuses == [ResultStatus.SUCCESS.value] * 2:
            landed.add(tag)
        else:  # undone as a whole, with the reason on the failed item
            assert ResultStatus.OPERATION_FAILED.value in statuses, statuses
            assert set(statuses) <= {ResultStatus.OPERATION_FAILED.value, ResultStatus.OPERATION_UNDONE.value}
    assert own == landed
    assert sorted(shared) == sorted(landed)
    print(f"{len(landed)}/{len(outcomes)} concurrent Undo batches landed; the rest were undone whole")
