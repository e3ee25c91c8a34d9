"""Query and DiscoverVersions: what this server speaks and does.

Every Query function answers only in the protocol versions that define it (versions.py), and
lists only what the request's version defines: a KMIP 1.1 client is never told about Encrypt
(1.2) or PGP Key (1.2). An empty answer is an answer ("no validations", "no extensions").
"""

from __future__ import annotations

from kmip.core.enums import (
    ClientRegistrationMethod,
    DestroyAction,
    ProfileName,
    ProtectionStorageMask,
    QueryFunction,
    RNGAlgorithm,
    RNGMode,
    ShreddingAlgorithm,
    UnwrapMode,
)
from kmip.core.enums import Tags as T

from .. import __version__
from ..protocol import ttlv, versions
from ..protocol.messages import SUPPORTED_VERSIONS, protocol_version
from ..protocol.ttlv import Item
from .context import RequestContext

VENDOR = "kmip-bridge"
Q = QueryFunction
P = ProfileName

# Profiles whose mandatory OASIS test cases this server passes in tests/conformance (per vector
# set; docs/conformance.md). Tape Library (TL-M-3 needs the reference server's random bytes) and
# the HTTPS/JSON/XML message encodings (the server speaks TTLV over TLS only) are not claimed; nor
# are versions whose vectors are not run here (1.0-1.3, 2.0): those get no Profile Information.
# (The 1.4 set ships no Baseline vectors, so Baseline is claimed for 2.1 only.)
_PROFILES_14 = (
    P.SYMMETRIC_KEY_LIFECYCLE_SERVER_KMIPv14,
    P.ASYMMETRIC_KEY_LIFECYCLE_SERVER_KMIPv14, P.BASIC_CRYPTOGRAPHIC_SERVER_KMIPv14,
    P.ADVANCED_CRYPTOGRAPHIC_SERVER_KMIPv14, P.RNG_CRYPTOGRAPHIC_SERVER_KMIPv14,
    P.SYMMETRIC_KEY_FOUNDRY_SERVER_KMIPv14, P.OPAQUE_MANAGED_OBJECT_STORE_SERVER_KMIPv14,
    P.SUITE_B_MINLOS_128_SERVER_KMIPv14, P.SUITE_B_MINLOS_192_SERVER_KMIPv14,
    P.STORAGE_ARRAY_WITH_SELF_ENCRYPTING_DRIVE_SERVER_KMIPv14,
)
_PROFILES_21 = (
    P.BASELINE_SERVER, P.SYMMETRIC_KEY_LIFECYCLE_SERVER, P.ASYMMETRIC_KEY_LIFECYCLE_SERVER,
    P.BASIC_CRYPTOGRAPHIC_SERVER, P.ADVANCED_CRYPTOGRAPHIC_SERVER, P.RNG_CRYPTOGRAPHIC_SERVER,
    P.SYMMETRIC_KEY_FOUNDRY_SERVER, P.OPAQUE_MANAGED_OBJECT_STORE_SERVER,
    P.STORAGE_ARRAY_WITH_SELF_ENCRYPTING_DRIVE_SERVER, P.QUANTUM_SAFE_SERVER,
)


def _operations(ctx: RequestContext) -> list[Item]:
    from .dispatch import HANDLERS  # the table lists this module too

    return [ttlv.enum(T.OPERATION, op) for op in HANDLERS if versions.operation_in(op, ctx.version)]


def _objects(ctx: RequestContext) -> list[Item]:
    from .objects import OBJECT_TAGS

    return [ttlv.enum(T.OBJECT_TYPE, t) for t in OBJECT_TAGS if versions.object_type_in(t, ctx.version)]


def _server_information(ctx: RequestContext) -> list[Item]:
    # Product Name and Server Version are 2.0 fields (tags 0x420131/0x42012F); a 1.x Server
    # Information holds vendor-specific content only, and is empty here (as the 1.4 vectors show).
    fields = [ttlv.text(T.PRODUCT_NAME, VENDOR), ttlv.text(T.SERVER_VERSION, __version__)] if ctx.v2 else []
    return [ttlv.text(T.VENDOR_IDENTIFICATION, VENDOR), ttlv.struct_(T.SERVER_INFORMATION, fields)]


def _rngs(ctx: RequestContext) -> list[Item]:
    # RNG Retrieve and server-made keys draw from the operating system's CSPRNG (getrandom, which
    # the kernel seeds and reseeds); no KMIP RNG Algorithm names it, so Unspecified — the same
    # value the Random Number Generator attribute of generated keys carries (create.py).
    return [ttlv.struct_(T.RNG_PARAMETERS, [ttlv.enum(T.RNG_ALGORITHM, RNGAlgorithm.UNSPECIFIED)])]


def _profiles(ctx: RequestContext) -> list[Item]:
    if ctx.version == versions.V14:
        return [ttlv.struct_(T.PROFILE_INFORMATION, [ttlv.enum(T.PROFILE_NAME, p)]) for p in _PROFILES_14]
    if ctx.version == versions.V21:
        version = ttlv.struct_(T.PROFILE_VERSION, [
            ttlv.integer(T.PROFILE_VERSION_MAJOR, 2), ttlv.integer(T.PROFILE_VERSION_MINOR, 1)])
        return [ttlv.struct_(T.PROFILE_INFORMATION, [ttlv.enum(T.PROFILE_NAME, p), version])
                for p in _PROFILES_21]
    return []


def _capabilities(ctx: RequestContext) -> list[Item]:
    return [ttlv.struct_(T.CAPABILITY_INFORMATION, [
        ttlv.boolean(T.STREAMING_CAPABILITY, True),  # Init/Final Indicator with Correlation Value
        ttlv.boolean(T.ASYNCHRONOUS_CAPABILITY, False),
        ttlv.boolean(T.ATTESTATION_CAPABILITY, False),
        # Batch Undo / Continue Capability are KMIP 1.4 fields (tags 0x4200F9/FA).
        *([ttlv.boolean(T.BATCH_UNDO_CAPABILITY, True), ttlv.boolean(T.BATCH_CONTINUE_CAPABILITY, True)]
          if ctx.version >= versions.V14 else []),
        # A wrapped key Registered stays wrapped: the server keeps what it was given.
        ttlv.enum(T.UNWRAP_MODE, UnwrapMode.NOT_PROCESSED),
        # Destroy erases the sealed material and keeps the metadata (KMIP's destroyed object).
        ttlv.enum(T.DESTROY_ACTION, DestroyAction.KEY_MATERIAL_DELETED),
        ttlv.enum(T.SHREDDING_ALGORITHM, ShreddingAlgorithm.UNSUPPORTED),
        ttlv.enum(T.RNG_MODE, RNGMode.SHARED_INSTANTIATION),
    ])]


def _registration_methods(ctx: RequestContext) -> list[Item]:
    # Clients are certificates: issued by the operator ('certs client', server pre-generated) or
    # made by the client and signed by the configured CA (client generated).
    return [ttlv.enum(T.CLIENT_REGISTRATION_METHOD, m) for m in (
        ClientRegistrationMethod.SERVER_PREGENERATED, ClientRegistrationMethod.CLIENT_GENERATED)]


def _storage_masks(ctx: RequestContext) -> list[Item]:
    return [ttlv.struct_(T.PROTECTION_STORAGE_MASKS, [
        ttlv.integer(T.PROTECTION_STORAGE_MASK, ProtectionStorageMask.SOFTWARE.value)])]


def _none(ctx: RequestContext) -> list[Item]:
    """Application Namespaces, Extension List/Map, Attestation Types, Validations, Defaults
    Information: the server has none of these, and says so by listing none."""
    return []


# In the order the Query response payload lists its fields.
_ANSWERS = (
    (Q.QUERY_OPERATIONS, _operations),
    (Q.QUERY_OBJECTS, _objects),
    (Q.QUERY_SERVER_INFORMATION, _server_information),
    (Q.QUERY_APPLICATION_NAMESPACES, _none),
    (Q.QUERY_EXTENSION_LIST, _none),
    (Q.QUERY_EXTENSION_MAP, _none),
    (Q.QUERY_ATTESTATION_TYPES, _none),
    (Q.QUERY_RNGS, _rngs),
    (Q.QUERY_VALIDATIONS, _none),
    (Q.QUERY_PROFILES, _profiles),
    (Q.QUERY_CAPABILITIES, _capabilities),
    (Q.QUERY_CLIENT_REGISTRATION_METHODS, _registration_methods),
    (Q.QUERY_DEFAULTS_INFORMATION, _none),
    (Q.QUERY_STORAGE_PROTECTION_MASKS, _storage_masks),
)


def query(ctx: RequestContext, payload: Item) -> Item:
    functions = {f.value for f in payload.all(T.QUERY_FUNCTION.value)} if payload else set()
    body: list[Item] = []
    for function, answer in _ANSWERS:
        # A function the request's version does not define is not answered (it has no meaning
        # in that version), as for an unknown value.
        if function.value in functions and versions.query_function_in(function.value, ctx.version):
            body += answer(ctx)
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)


def discover_versions(ctx: RequestContext, payload: Item) -> Item:
    asked = []
    for pv in payload.all(T.PROTOCOL_VERSION.value) if payload else []:
        asked.append(
            (pv.value_of(T.PROTOCOL_VERSION_MAJOR.value), pv.value_of(T.PROTOCOL_VERSION_MINOR.value))
        )
    versions_ = [v for v in asked if v in SUPPORTED_VERSIONS] if asked else list(SUPPORTED_VERSIONS)
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [protocol_version(v) for v in versions_])  # type: ignore[arg-type]
