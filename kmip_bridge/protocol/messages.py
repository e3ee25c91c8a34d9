"""KMIP request/response messages over the TTLV tree (KMIP 1.0-2.1 headers)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from kmip.core.enums import BatchErrorContinuationOption, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from . import ttlv, versions
from .errors import KmipError
from .ttlv import Item, Type

Version = tuple[int, int]

# Plain-attribute copies of the tag numbers, the types and one enum value: ``T.X.value`` and
# ``Type.X`` are slow enum lookups (a metaclass attribute plus a property call), and these are
# read for every message. Builders given int tags skip converting them too.
_T = SimpleNamespace(**{name: tag.value for name, tag in T.__members__.items()})
_TYPE = SimpleNamespace(**dict(Type.__members__))
_STOP: int = BatchErrorContinuationOption.STOP.value

SUPPORTED_VERSIONS: tuple[Version, ...] = ((2, 1), (2, 0), (1, 4), (1, 3), (1, 2), (1, 1), (1, 0))


@dataclass
class BatchItem:
    operation: int
    unique_batch_item_id: bytes | None
    payload: Item | None


@dataclass
class Request:
    version: Version
    batch_items: list[BatchItem]
    batch_error_option: int = _STOP
    client_correlation_value: str | None = None
    server_correlation_value: str | None = None
    maximum_response_size: int | None = None
    header: Item | None = None
    # Usernames of the Username and Password credentials in the header's Authentication (the
    # password itself is never kept); other credential types (Device, Attestation) add nothing.
    credential_usernames: tuple[str, ...] = ()


@dataclass
class Result:
    """The outcome of one batch item."""

    operation: int | None
    unique_batch_item_id: bytes | None
    payload: Item | None = None
    status: int = ResultStatus.SUCCESS.value
    reason: int | None = None
    message: str | None = None

    @classmethod
    def failure(cls, item: BatchItem | None, error: KmipError) -> Result:
        return cls(
            operation=item.operation if item else None,
            unique_batch_item_id=item.unique_batch_item_id if item else None,
            status=error.status,
            reason=error.reason,
            message=error.message,
        )


@dataclass
class Response:
    version: Version
    results: list[Result] = field(default_factory=list)
    client_correlation_value: str | None = None
    server_correlation_value: str | None = None


def _invalid(message: str) -> KmipError:
    return KmipError(ResultReason.INVALID_MESSAGE, message)


def _version_of(header: Item) -> Version:
    pv = header.get(_T.PROTOCOL_VERSION)
    if pv is None or pv.type != _TYPE.STRUCTURE:
        raise _invalid("request header has no Protocol Version")
    major = pv.get(_T.PROTOCOL_VERSION_MAJOR)
    minor = pv.get(_T.PROTOCOL_VERSION_MINOR)
    # Integer type only: the version is echoed in the response, which encodes it as an Integer.
    if major is None or minor is None or major.type != _TYPE.INTEGER or minor.type != _TYPE.INTEGER:
        raise _invalid("Protocol Version needs integer major and minor parts")
    return (major.value, minor.value)  # type: ignore[return-value]


def peek_version(message: Item) -> Version | None:
    """Best-effort protocol version of a (possibly broken) request, for the error response."""
    try:
        header = message.get(_T.REQUEST_HEADER)
        return _version_of(header) if header is not None else None
    except (KmipError, TypeError, AttributeError):
        return None


def parse_request(message: Item, max_batch_items: int | None = None) -> Request:
    """Raises KmipError (Invalid Message) for a malformed request, or one holding more than
    ``max_batch_items`` batch items (checked before any item is looked at)."""
    if message.tag != _T.REQUEST_MESSAGE or message.type != _TYPE.STRUCTURE:
        raise _invalid("not a Request Message")
    if max_batch_items is not None:
        n = len(message.all(_T.BATCH_ITEM))
        if n > max_batch_items:
            raise _invalid(f"request holds {n} batch items, more than the limit of {max_batch_items}")
    header = message.get(_T.REQUEST_HEADER)
    if header is None or header.type != _TYPE.STRUCTURE:
        raise _invalid("request has no Request Header")
    version = _version_of(header)
    items: list[BatchItem] = []
    for bi in message.all(_T.BATCH_ITEM):
        if bi.type != _TYPE.STRUCTURE:
            raise _invalid("Batch Item must be a structure")
        op = bi.get(_T.OPERATION)
        if op is None or op.type != _TYPE.ENUMERATION:
            raise _invalid("batch item has no Operation")
        ubi = bi.get(_T.UNIQUE_BATCH_ITEM_ID)
        if ubi is not None and ubi.type != _TYPE.BYTE_STRING:  # echoed in the response as bytes
            raise _invalid("Unique Batch Item ID must be a byte string")
        payload = bi.get(_T.REQUEST_PAYLOAD)
        if payload is not None and payload.type != _TYPE.STRUCTURE:
            raise _invalid("Request Payload must be a structure")
        items.append(
            BatchItem(op.value, ubi.value if ubi is not None else None, payload)  # type: ignore[arg-type]
        )
    count = header.value_of(_T.BATCH_COUNT)
    if count != len(items):
        raise _invalid(f"Batch Count says {count} but the message holds {len(items)} batch items")
    if not items:
        raise _invalid("request holds no batch items")
    option = header.value_of(_T.BATCH_ERROR_CONTINUATION_OPTION)
    # Asynchronous Indicator, Batch Order Option and Attestation Capable Indicator need no reading:
    # every batch is answered synchronously (which a client able to take an asynchronous answer
    # accepts) and in order (what Batch Order Option true asks, and allowed when false), and no
    # attestation is ever required.
    return Request(
        version=version,
        batch_items=items,
        batch_error_option=option if isinstance(option, int) else _STOP,
        client_correlation_value=_text_or_none(header.value_of(_T.CLIENT_CORRELATION_VALUE)),
        server_correlation_value=_text_or_none(header.value_of(_T.SERVER_CORRELATION_VALUE)),
        maximum_response_size=_int_or_none(header.value_of(_T.MAXIMUM_RESPONSE_SIZE)),
        header=header,
        credential_usernames=_credential_usernames(header),
    )


_USERNAME_AND_PASSWORD = 1  # Credential Type


def _credential_usernames(header: Item) -> tuple[str, ...]:
    """The usernames of the header's Username and Password credentials. Appliances send them
    besides their certificate (KMIP 1.x and 2.x: Authentication holds one or more Credential).
    A malformed Authentication is Invalid Message; the password is read past, never kept."""
    names: list[str] = []
    for auth in header.all(_T.AUTHENTICATION):
        if auth.type != _TYPE.STRUCTURE:
            raise _invalid("Authentication must be a structure")
        for cred in auth.all(_T.CREDENTIAL):
            ctype = cred.get(_T.CREDENTIAL_TYPE) if cred.type == _TYPE.STRUCTURE else None
            value = cred.get(_T.CREDENTIAL_VALUE) if cred.type == _TYPE.STRUCTURE else None
            if ctype is None or ctype.type != _TYPE.ENUMERATION or value is None:
                raise _invalid("a Credential needs a Credential Type and a Credential Value")
            if ctype.value == _USERNAME_AND_PASSWORD:
                user = value.get(_T.USERNAME) if value.type == _TYPE.STRUCTURE else None
                if user is None or user.type != _TYPE.TEXT_STRING:
                    raise _invalid("a Username and Password credential needs a text Username")
                names.append(user.value)  # type: ignore[arg-type]
    return tuple(names)


def _text_or_none(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _int_or_none(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def protocol_version(version: Version) -> Item:
    return ttlv.struct_(
        _T.PROTOCOL_VERSION,
        [
            ttlv.integer(_T.PROTOCOL_VERSION_MAJOR, version[0]),
            ttlv.integer(_T.PROTOCOL_VERSION_MINOR, version[1]),
        ],
    )


def build_response(response: Response, now: int | None = None) -> Item:
    header = [
        protocol_version(response.version),
        ttlv.date_time(_T.TIME_STAMP, int(time.time()) if now is None else now),
    ]
    if response.version >= versions.CORRELATION_VALUES_SINCE:
        if response.client_correlation_value is not None:
            header.append(ttlv.text(_T.CLIENT_CORRELATION_VALUE, response.client_correlation_value))
        if response.server_correlation_value is not None:
            header.append(ttlv.text(_T.SERVER_CORRELATION_VALUE, response.server_correlation_value))
    header.append(ttlv.integer(_T.BATCH_COUNT, len(response.results)))
    children = [ttlv.struct_(_T.RESPONSE_HEADER, header)]
    for r in response.results:
        bi: list[Item | None] = [
            ttlv.enum(_T.OPERATION, r.operation) if r.operation is not None else None,
            ttlv.bytes_(_T.UNIQUE_BATCH_ITEM_ID, r.unique_batch_item_id)
            if r.unique_batch_item_id is not None
            else None,
            ttlv.enum(_T.RESULT_STATUS, r.status),
            # A reason the client's version lacks becomes the nearest one it defines (versions.py).
            ttlv.enum(_T.RESULT_REASON, versions.reason_for(r.reason, response.version))
            if r.reason is not None
            else None,
            ttlv.text(_T.RESULT_MESSAGE, r.message) if r.message is not None else None,
            r.payload,
        ]
        children.append(ttlv.struct_(_T.BATCH_ITEM, bi))
    return ttlv.struct_(_T.RESPONSE_MESSAGE, children)


def error_response(version: Version | None, error: KmipError) -> bytes:
    """A whole-message failure (the request could not be parsed or was refused)."""
    response = Response(version=version or (1, 0), results=[Result.failure(None, error)])
    return ttlv.encode(build_response(response))
