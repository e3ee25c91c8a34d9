"""The dispatch table and batch processing: one request message in, one response message out.

This is the only entry the server calls. Each batch item runs in the request's own context;
failures become KMIP results, never exceptions that reach the connection.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable

from kmip.core.enums import (
    BatchErrorContinuationOption,
    DerivationMethod,
    KeyFormatType,
    Operation,
    ResultReason,
    ResultStatus,
)
from kmip.core.enums import Tags as T
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .. import keyhsm, logs, metrics
from ..protocol import gate, messages, ttlv, versions
from ..protocol.errors import KmipError
from ..protocol.messages import BatchItem, Request, Response, Result
from ..protocol.ttlv import Item, Type
from ..store import ConcurrentUpdate, StoreUnavailable
from . import (
    attribute_ops,
    attributes,
    auditing,
    create,
    crypto,
    derive,
    get,
    interop,
    key_pair,
    lifecycle,
    locate,
    mac,
    misc_crypto,
    optional,
    query,
    register,
    rekey,
    signing,
    split_keys,
)
from .context import RequestContext, Services

log = logging.getLogger("kmip_bridge.operations")

Handler = Callable[[RequestContext, Item], Item]

HANDLERS: dict[int, Handler] = {
    Operation.CREATE.value: create.handle,
    Operation.REGISTER.value: register.handle,
    Operation.GET.value: get.handle,
    Operation.GET_ATTRIBUTES.value: attributes.get_attributes,
    Operation.GET_ATTRIBUTE_LIST.value: attributes.get_attribute_list,
    Operation.LOCATE.value: locate.handle,
    Operation.ACTIVATE.value: lifecycle.activate,
    Operation.REVOKE.value: lifecycle.revoke,
    Operation.DESTROY.value: lifecycle.destroy,
    Operation.QUERY.value: query.query,
    Operation.DISCOVER_VERSIONS.value: query.discover_versions,
    Operation.ENCRYPT.value: crypto.encrypt,
    Operation.DECRYPT.value: crypto.decrypt,
    Operation.SIGN.value: signing.sign,
    Operation.SIGNATURE_VERIFY.value: signing.verify,
    Operation.MAC.value: mac.mac,
    Operation.MAC_VERIFY.value: mac.mac_verify,
    Operation.HASH.value: misc_crypto.hash_,
    Operation.RNG_RETRIEVE.value: misc_crypto.rng_retrieve,
    Operation.RNG_SEED.value: misc_crypto.rng_seed,
    Operation.INTEROP.value: interop.interop,
    Operation.LOG.value: interop.log_message,
    Operation.ADD_ATTRIBUTE.value: attribute_ops.add_attribute,
    Operation.MODIFY_ATTRIBUTE.value: attribute_ops.modify_attribute,
    Operation.SET_ATTRIBUTE.value: attribute_ops.set_attribute,
    Operation.DELETE_ATTRIBUTE.value: attribute_ops.delete_attribute,
    Operation.CHECK.value: attribute_ops.check,
    Operation.CREATE_KEY_PAIR.value: key_pair.create_key_pair,
    Operation.REKEY.value: rekey.handle,
    Operation.REKEY_KEY_PAIR.value: key_pair.rekey_key_pair,
    Operation.DERIVE_KEY.value: derive.handle,
    Operation.OBTAIN_LEASE.value: optional.obtain_lease,
    Operation.GET_USAGE_ALLOCATION.value: optional.get_usage_allocation,
    Operation.POLL.value: optional.poll,
    Operation.CANCEL.value: optional.cancel,
    Operation.CREATE_SPLIT_KEY.value: split_keys.create_split_key,
    Operation.JOIN_SPLIT_KEY.value: split_keys.join_split_key,
}


_STATUS = {s.value: s.name.lower() for s in ResultStatus}
_REASON = {r.value: r.name.lower() for r in ResultReason}


def _op_name(op: int | None) -> str:
    try:
        return Operation(op).name if op is not None else "-"
    except ValueError:
        return f"0x{op:08X}"


def to_kmip_error(exc: Exception) -> KmipError:
    """Maps failures of the layers below to what the client is told (no secrets, no SQL)."""
    if isinstance(exc, KmipError):
        return exc
    if isinstance(exc, keyhsm.KekRevoked):
        return KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE, str(exc))
    if isinstance(exc, keyhsm.IntegrityError):
        return KmipError(
            ResultReason.CRYPTOGRAPHIC_FAILURE,
            "the stored material failed its integrity check (tampered with or moved between objects)",
        )
    if isinstance(exc, keyhsm.KeyHsmError):
        return KmipError(ResultReason.GENERAL_FAILURE, f"key HSM unavailable: {exc}")
    if isinstance(exc, StoreUnavailable):
        return KmipError(ResultReason.GENERAL_FAILURE, str(exc))
    if isinstance(exc, PoolTimeout):  # every pooled connection stayed busy for database.pool_timeout
        return KmipError(ResultReason.GENERAL_FAILURE, "database unavailable: no free connection within pool_timeout")
    if isinstance(exc, DBAPIError) or _driver_error(exc):
        return KmipError(ResultReason.GENERAL_FAILURE, "database unavailable")
    if isinstance(exc, ConcurrentUpdate):
        return KmipError(ResultReason.GENERAL_FAILURE, str(exc))
    if isinstance(exc, (TypeError, ValueError, AttributeError, KeyError, IndexError)):
        # A field of the wrong type or shape in an otherwise well-formed message.
        return KmipError(ResultReason.INVALID_FIELD, "a request field has the wrong type or shape")
    return KmipError(ResultReason.GENERAL_FAILURE, "internal server error")


# Operations that read one object and write it back in one store call guarded by its row_version
# (no effect outside that transaction). When a concurrent request — on this node or another one —
# wins the race, the write changes nothing and raises ConcurrentUpdate; re-running the handler
# from the read is exactly what the client would do, so the server does it (re-checking state and
# permissions on the fresh row). Others (crypto with multi-part streams or Usage Limits, creation)
# are not re-run: the conflict is reported. Inside an Undo batch the transaction spans earlier
# items, so re-running one item alone would be wrong: the target row is locked for the rest of the
# batch, and a conflict (with a writer that took no lock) undoes the batch and is reported.
_RETRIED = frozenset(
    {
        Operation.ADD_ATTRIBUTE.value,
        Operation.MODIFY_ATTRIBUTE.value,
        Operation.SET_ATTRIBUTE.value,
        Operation.DELETE_ATTRIBUTE.value,
        Operation.ACTIVATE.value,
        Operation.REVOKE.value,
        Operation.DESTROY.value,
    }
)
_ATTEMPTS = 10


def _call(handler: Handler, ctx: RequestContext, payload: Item, operation: int) -> Item:
    store = ctx.services.store
    if operation not in _RETRIED:
        return handler(ctx, payload)
    if store.in_unit_of_work():
        # An Undo batch: the row stays locked until the batch ends; a conflict undoes the batch.
        return _locked(handler, ctx, payload)
    for attempt in range(_ATTEMPTS):
        try:
            # Its own transaction, the target row read FOR UPDATE: changes of one object made
            # through any node queue on the row lock. The retry remains for writers that do not
            # lock (keyhsm rewrap; Usage Limits, ReKey and DeriveKey updating a key they use).
            with store.unit_of_work():
                return _locked(handler, ctx, payload)
        except ConcurrentUpdate:
            if attempt + 1 == _ATTEMPTS:
                raise
            # Random, growing back-off (2 ms .. ~1 s) so that contenders stop colliding.
            time.sleep(random.uniform(0, 0.002 * 2**attempt))
    raise AssertionError("unreachable")


def _locked(handler: Handler, ctx: RequestContext, payload: Item) -> Item:
    ctx.lock_target = True
    try:
        return handler(ctx, payload)
    finally:
        ctx.lock_target = False


def _driver_error(exc: Exception) -> bool:
    """An exception of the database driver itself, which SQLAlchemy lets through on a few pool
    paths (e.g. resetting a dropped connection on check-in)."""
    return type(exc).__module__.split(".")[0] in ("psycopg2", "sqlite3")


def run_item(ctx: RequestContext, item: BatchItem) -> Result:
    # An operation the request's protocol version does not define is not supported in it, except
    # Discover Versions (1.1): it is how a client finds a version, and 1.0 clients (libmongocrypt)
    # send it in a 1.0 header.
    defined = item.operation == Operation.DISCOVER_VERSIONS.value or versions.operation_in(item.operation, ctx.version)
    handler = HANDLERS.get(item.operation) if defined else None
    started = time.perf_counter()
    if handler is None:
        error = KmipError(
            ResultReason.OPERATION_NOT_SUPPORTED, f"operation {_op_name(item.operation)} is not supported"
        )
        result = Result.failure(item, error)
    else:
        payload = item.payload or Item(T.REQUEST_PAYLOAD.value, Type.STRUCTURE, [])
        ctx.operation = item.operation
        try:
            out = _call(handler, ctx, payload, item.operation)
            # Whatever the handler built, only what the request's version defines leaves (gate.py).
            out = gate.fit(out, ctx.version, item.operation) if out is not None else out
            result = Result(item.operation, item.unique_batch_item_id, payload=out)
        except Exception as exc:
            error = to_kmip_error(exc)
            if error.reason == ResultReason.GENERAL_FAILURE.value and not isinstance(exc, KmipError):
                log.error(
                    "operation failed",
                    extra={"operation": _op_name(item.operation), "error": type(exc).__name__},
                    exc_info=not isinstance(exc, (keyhsm.KeyHsmError, StoreUnavailable, ConcurrentUpdate,
                                                  PoolTimeout, DBAPIError)),
                )
            result = Result.failure(item, error)
            result.payload = _failure_payload(ctx, error, item.operation)
    auditing.record(ctx, item, result, started)  # the audit file (if enabled) and the log line
    reason = None if result.reason is None else _REASON.get(result.reason, "unknown")
    metrics.observe(_op_name(item.operation), _STATUS.get(result.status, "unknown"), started, reason)
    return result


def _failure_payload(ctx: RequestContext, error: KmipError, operation: int) -> Item | None:
    """The payload a failure carries (a failed 1.x Check names what failed), as the version can."""
    failed = getattr(error, "payload", None)
    try:
        return gate.fit(failed, ctx.version, operation) if failed is not None else None
    except KmipError:
        return None


class _UndoBatch(Exception):
    pass


# Operations whose slow part (RSA generation, PBKDF2 at up to the iteration cap, opening a PKCS#12) would run while
# an Undo batch holds SQLite's one write lock, stalling every writer of every worker (issue 12).
# DeriveKey counts only with PBKDF2; its other methods are one hash, HMAC or block operation.
_SLOW = frozenset({Operation.CREATE_KEY_PAIR.value, Operation.REKEY_KEY_PAIR.value})

# The clock the Undo lock budget is measured with (a test replaces it).
_clock = time.monotonic


def _slow(item: BatchItem) -> bool:
    if item.operation in _SLOW:
        return True
    if item.operation == Operation.DERIVE_KEY.value and item.payload is not None:
        return item.payload.value_of(T.DERIVATION_METHOD.value) == DerivationMethod.PBKDF2.value
    if item.operation == Operation.REGISTER.value and item.payload is not None:
        # A PKCS#12 is opened by its password-based KDF (its own iteration counts: pkcs12.py).
        key = item.payload.get(T.PRIVATE_KEY.value)
        block = key.get(T.KEY_BLOCK.value) if key is not None and key.type == Type.STRUCTURE else None
        return block is not None and block.type == Type.STRUCTURE \
            and block.value_of(T.KEY_FORMAT_TYPE.value) == KeyFormatType.PKCS_12.value
    return False


def _refuse(ctx: RequestContext, item: BatchItem, error: KmipError) -> Result:
    """A batch item answered without being run (audited and counted like any other)."""
    started = time.perf_counter()
    result = Result.failure(item, error)
    auditing.record(ctx, item, result, started)
    metrics.observe(_op_name(item.operation), _STATUS.get(result.status, "unknown"), started)
    return result


class _Budget:
    """Bytes the response may still take (server.max_response_size, or the client's Maximum
    Response Size if smaller), counted as each item's result is produced: an item that does not
    fit is answered Response Too Large and its payload dropped at once, so a batch of large
    results never sits in memory (KMIP: Response Too Large when the response would exceed the
    Maximum Response Size)."""

    _HEADER = 256  # the response header (but a Client Correlation Value) and the message structure

    def __init__(self, server_limit: int, client_limit: int | None) -> None:
        self.limit = min(server_limit, client_limit) if client_limit is not None else server_limit
        self.left = self.limit - self._HEADER

    def fit(self, result: Result) -> Result:
        size = _item_size(result)
        if size <= self.left:
            self.left -= size
            return result
        error = KmipError(ResultReason.RESPONSE_TOO_LARGE, f"the result does not fit in {self.limit} bytes")
        refused = Result.failure(BatchItem(result.operation or 0, result.unique_batch_item_id, None), error)
        # A refusal is always answered (about 100 bytes): past the budget only by those.
        self.left -= _item_size(refused)
        return refused


def _item_size(r: Result) -> int:
    """The encoded size of one response Batch Item (as messages.build_response lays it out)."""
    size = 8 + 16 + 16  # the structure's header, Operation, Result Status
    if r.unique_batch_item_id is not None:
        size += 8 + (len(r.unique_batch_item_id) + 7) // 8 * 8
    if r.reason is not None:
        size += 16
    if r.message is not None:
        size += ttlv.encoded_size(ttlv.text(T.RESULT_MESSAGE, r.message))
    if r.payload is not None:
        size += ttlv.encoded_size(r.payload)
    return size


def _run_undo(ctx: RequestContext, request: Request, response: Response, budget: _Budget) -> None:
    """The whole batch is one transaction; a failure rolls back what earlier items did.

    On SQLite that transaction holds the one write lock of every worker from its first item to
    its last, so an Undo batch there may neither contain slow items (refused before anything
    runs: sent without the Undo option each runs in its own short transaction) nor hold the lock
    longer than server.undo_lock_seconds (checked between items; the batch is then undone).
    PostgreSQL locks only the rows a batch writes: no such limits there."""
    store = ctx.services.store
    single_writer = store.single_writer
    items = request.batch_items
    try:
        if single_writer:
            slow = next((i for i, item in enumerate(items) if _slow(item)), None)
            if slow is not None:
                response.results = [Result(item.operation, item.unique_batch_item_id) for item in items[:slow]]
                response.results.append(_refuse(ctx, items[slow], ctx.limit_exceeded(
                    f"{_op_name(items[slow].operation)} is slow work and is not run inside an Undo batch on this "
                    "server (SQLite: it would hold the database's write lock); send it without the Undo option")))
                raise _UndoBatch()
        with store.unit_of_work():
            began = _clock()
            limit = ctx.services.budgets.undo_lock_seconds
            for n, item in enumerate(items):
                if single_writer and n and _clock() - began > limit:
                    response.results.append(_refuse(ctx, item, ctx.limit_exceeded(
                        f"the Undo batch held the database's write lock longer than {limit:g} s "
                        "(server.undo_lock_seconds); send fewer items per Undo batch")))
                    raise _UndoBatch()
                result = budget.fit(run_item(ctx, item))
                response.results.append(result)
                if result.status != ResultStatus.SUCCESS.value:
                    raise _UndoBatch()
    except _UndoBatch:
        for done, item in zip(response.results[:-1], items, strict=False):
            done.status = ResultStatus.OPERATION_UNDONE.value
            auditing.record(ctx, item, done)


def process(ctx: RequestContext, request: Request) -> Response:
    response = Response(
        version=request.version,
        client_correlation_value=request.client_correlation_value,
        # The request id of the server's log lines, so that a client can quote it.
        server_correlation_value=(logs.request_id() or uuid.uuid4().hex[:16])
        if request.version >= versions.CORRELATION_VALUES_SINCE else None,
    )
    budget = _Budget(ctx.services.budgets.max_response_size, request.maximum_response_size)
    if request.client_correlation_value is not None:  # echoed in the response header
        budget.left -= ttlv.encoded_size(ttlv.text(T.CLIENT_CORRELATION_VALUE, request.client_correlation_value))
    option = request.batch_error_option
    if option == BatchErrorContinuationOption.UNDO.value:
        _run_undo(ctx, request, response, budget)
        return response
    stop_on_error = option != BatchErrorContinuationOption.CONTINUE.value
    for item in request.batch_items:
        result = budget.fit(run_item(ctx, item))
        response.results.append(result)
        if result.status != ResultStatus.SUCCESS.value and stop_on_error:
            break
    return response


def _fit(response: Response, limit: int | None) -> bytes:
    """Encodes the response; over the client's Maximum Response Size (a backstop: process()
    already refused each item that did not fit), every item is refused."""
    data = ttlv.encode(messages.build_response(response))
    if limit is not None and len(data) > limit:
        error = KmipError(ResultReason.RESPONSE_TOO_LARGE, f"the response ({len(data)} bytes) exceeds {limit} bytes")
        response.results = [
            Result.failure(BatchItem(r.operation or 0, r.unique_batch_item_id, None), error)
            for r in response.results
        ]
        data = ttlv.encode(messages.build_response(response))
    return data


def handle_message(
    services: Services, identity: object, peer: str, data: bytes, limits: ttlv.Limits,
    max_batch_items: int | None = None,
) -> bytes:
    """Decodes, runs and encodes one request message. Raises ttlv.TtlvError only for bytes that
    are not TTLV at all (the connection is then closed)."""
    message = ttlv.decode(data, limits)
    version = messages.peek_version(message)
    try:
        request = messages.parse_request(message, max_batch_items)
    except KmipError as error:
        return messages.error_response(version, error)
    if request.version not in messages.SUPPORTED_VERSIONS:
        error = KmipError(
            ResultReason.INVALID_MESSAGE,
            f"protocol version {request.version[0]}.{request.version[1]} is not supported",
        )
        return messages.error_response((1, 0), error)
    if services.bind_credential and any(u != identity.name for u in request.credential_usernames):  # type: ignore[attr-defined]
        # policy.bind_credential: a Username and Password credential must name the certificate's
        # identity (an appliance configured with another device's account is refused).
        error = KmipError(ResultReason.AUTHENTICATION_NOT_SUCCESSFUL,
                          "the request's credential does not name the client certificate's identity")
        refused = Response(version=request.version, client_correlation_value=request.client_correlation_value,
                           results=[Result.failure(item, error) for item in request.batch_items])
        return ttlv.encode(messages.build_response(refused))
    ctx = RequestContext(services=services, identity=identity, peer=peer, version=request.version)  # type: ignore[arg-type]
    return _fit(process(ctx, request), request.maximum_response_size)
