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

from kmip.core.enums import BatchErrorContinuationOption, Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .. import keyhsm, logs, metrics
from ..protocol import messages, ttlv, versions
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
    # An operation the request's protocol version does not define is not supported in it.
    handler = HANDLERS.get(item.operation) if versions.operation_in(item.operation, ctx.version) else None
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
            result.payload = getattr(error, "payload", None)  # a failed 1.x Check names what failed
    auditing.record(ctx, item, result, started)  # the audit file (if enabled) and the log line
    metrics.observe(_op_name(item.operation), _STATUS.get(result.status, "unknown"), started)
    return result


class _UndoBatch(Exception):
    pass


def process(ctx: RequestContext, request: Request) -> Response:
    response = Response(
        version=request.version,
        client_correlation_value=request.client_correlation_value,
        # The request id of the server's log lines, so that a client can quote it.
        server_correlation_value=(logs.request_id() or uuid.uuid4().hex[:16])
        if request.version >= versions.CORRELATION_VALUES_SINCE else None,
    )
    option = request.batch_error_option
    if option == BatchErrorContinuationOption.UNDO.value:
        # The whole batch is one transaction; a failure rolls back what earlier items did.
        try:
            with ctx.services.store.unit_of_work():
                for item in request.batch_items:
                    result = run_item(ctx, item)
                    response.results.append(result)
                    if result.status != ResultStatus.SUCCESS.value:
                        raise _UndoBatch()
        except _UndoBatch:
            for done, item in zip(response.results[:-1], request.batch_items, strict=False):
                done.status = ResultStatus.OPERATION_UNDONE.value
                auditing.record(ctx, item, done)
        return response
    stop_on_error = option != BatchErrorContinuationOption.CONTINUE.value
    for item in request.batch_items:
        result = run_item(ctx, item)
        response.results.append(result)
        if result.status != ResultStatus.SUCCESS.value and stop_on_error:
            break
    return response


def _fit(response: Response, limit: int | None) -> bytes:
    """Encodes the response; over the client's Maximum Response Size, every item is refused."""
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
    ctx = RequestContext(services=services, identity=identity, peer=peer, version=request.version)  # type: ignore[arg-type]
    return _fit(process(ctx, request), request.maximum_response_size)
