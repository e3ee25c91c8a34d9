"""Interop (test-case markers from the OASIS interop procedure) and Log (a client's note)."""

from __future__ import annotations

import logging

from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.ttlv import Item
from .context import RequestContext

log = logging.getLogger("kmip_bridge.operations")


def interop(ctx: RequestContext, payload: Item) -> Item:
    log.info(
        "interop marker",
        extra={"function": payload.value_of(T.INTEROP_FUNCTION.value),
               "interop_id": payload.value_of(T.INTEROP_IDENTIFIER.value)},
    )
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [])


def log_message(ctx: RequestContext, payload: Item) -> Item:
    message = payload.value_of(T.LOG_MESSAGE.value)
    # Client text goes to the log truncated, as data: it is not trusted.
    log.info("client log message", extra={"identity": ctx.identity.name, "text": str(message)[:512]})
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [])
