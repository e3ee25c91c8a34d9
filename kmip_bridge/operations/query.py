"""Query and DiscoverVersions: what this server speaks and does."""

from __future__ import annotations

from kmip.core.enums import QueryFunction
from kmip.core.enums import Tags as T

from .. import __version__
from ..protocol import ttlv
from ..protocol.messages import SUPPORTED_VERSIONS, protocol_version
from ..protocol.ttlv import Item
from .context import RequestContext

VENDOR = "kmip-bridge"


def query(ctx: RequestContext, payload: Item) -> Item:
    from .dispatch import HANDLERS  # the table lists this module too

    functions = {f.value for f in payload.all(T.QUERY_FUNCTION.value)} if payload else set()
    body: list[Item] = []
    if QueryFunction.QUERY_OPERATIONS.value in functions:
        body += [ttlv.enum(T.OPERATION, op) for op in HANDLERS]
    if QueryFunction.QUERY_OBJECTS.value in functions:
        from .objects import OBJECT_TAGS

        body += [ttlv.enum(T.OBJECT_TYPE, t) for t in OBJECT_TAGS]
    if QueryFunction.QUERY_SERVER_INFORMATION.value in functions:
        body.append(ttlv.text(T.VENDOR_IDENTIFICATION, VENDOR))
        # Vendor-specific in 1.x; these are the 2.0 fields (Product Name, Server Version).
        body.append(ttlv.struct_(T.SERVER_INFORMATION, [
            ttlv.text(T.PRODUCT_NAME, VENDOR), ttlv.text(T.SERVER_VERSION, __version__)]))
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)


def discover_versions(ctx: RequestContext, payload: Item) -> Item:
    asked = []
    for pv in payload.all(T.PROTOCOL_VERSION.value) if payload else []:
        asked.append(
            (pv.value_of(T.PROTOCOL_VERSION_MAJOR.value), pv.value_of(T.PROTOCOL_VERSION_MINOR.value))
        )
    versions = [v for v in asked if v in SUPPORTED_VERSIONS] if asked else list(SUPPORTED_VERSIONS)
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [protocol_version(v) for v in versions])  # type: ignore[arg-type]
