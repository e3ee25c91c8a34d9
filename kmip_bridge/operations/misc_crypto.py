"""Hash, RNGRetrieve and RNGSeed: the keyless cryptographic services."""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import hashes
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError, missing
from ..protocol.ttlv import Item
from . import keyuse, streams
from .context import RequestContext
from .keyuse import Params

# Bytes per RNGRetrieve: far more than any key or nonce needs; a client wanting more asks again
# (each response also counts against server.max_response_size).
MAX_RANDOM = 64 * 1024


def _authorize(ctx: RequestContext) -> None:
    """No object is involved: the default operation policy decides who may use the service."""
    if ctx.operation is not None and not ctx.services.policy.allowed(
        ctx.identity, ctx.operation, None, None, "default"
    ):
        raise KmipError(ResultReason.PERMISSION_DENIED, "this operation is not permitted")


@keyuse.guarded
def hash_(ctx: RequestContext, payload: Item) -> Item:
    _authorize(ctx)
    p, stream = streams.start(ctx, payload, Operation.HASH.value)
    if stream is None:
        params = Params.parse(payload.get(T.CRYPTOGRAPHIC_PARAMETERS.value))
        if params.hashing_algorithm is None:
            raise missing("Hash needs Cryptographic Parameters with a Hashing Algorithm")
        keyuse.hash_for(ctx, params.hashing_algorithm)  # refuse an unsupported one at the first part
        stream = streams.new(ctx, Operation.HASH.value, None, params=params)
    streams.feed(ctx, stream, keyuse.data(payload, required=p.correlation is None))
    body = []
    if p.final:
        params = stream.state["params"]
        digest = hashes.Hash(keyuse.hash_for(ctx, params.hashing_algorithm))  # type: ignore[attr-defined]
        digest.update(bytes(stream.data))
        body.append(ttlv.bytes_(T.DATA, digest.finalize()))
    body += streams.finish(ctx, p, stream)
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)


def rng_retrieve(ctx: RequestContext, payload: Item) -> Item:
    _authorize(ctx)
    length = payload.value_of(T.DATA_LENGTH.value)
    if not isinstance(length, int):
        raise missing("RNGRetrieve needs a Data Length")
    if not 0 < length <= MAX_RANDOM:
        raise KmipError(ResultReason.INVALID_FIELD, f"Data Length must be between 1 and {MAX_RANDOM}")
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.bytes_(T.DATA, secrets.token_bytes(length))])


def rng_seed(ctx: RequestContext, payload: Item) -> Item:
    """Accepted and counted, not mixed in: the server draws from the operating system's CSPRNG,
    which seeds itself and which client-chosen bytes could not make stronger."""
    _authorize(ctx)
    seed = keyuse.data(payload)
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.integer(T.DATA_LENGTH, len(seed))])
