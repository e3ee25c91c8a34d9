"""Compares a server's response with a vector's expected response template.

Everything is compared strictly (tags, types, values, order, no missing and no extra items) except
these values, which the server legitimately chooses and the vector therefore cannot know:

T1  ``$NAME`` placeholders (``$UNIQUE_IDENTIFIER_n``, ``$KEY_MATERIAL_n``, ``$SIGNATURE_DATA``...):
    the first occurrence binds the actual value (types must match), later occurrences must equal
    it, and later requests send it. Two different ``$UNIQUE_IDENTIFIER_n`` may not bind one id.
T2  ``$NOW`` / ``$NOW±N``: any DateTime (or DateTimeExtended) within ±``time_tolerance`` seconds of
    the response's arrival time ±N. Covers Time Stamp and every server-set date the vectors mark so
    (Initial Date, Last Change Date, Original Creation Date, Activation/Deactivation/Compromise
    Date set by Activate/Revoke). Dates the vector gives literally are compared exactly.
T3  Response header Client/Server Correlation Value: optional, any text (server's own tracing).
T4  Result Message: free-form text; only its presence (and type) is compared.
T5  Query response Vendor Identification and Server Information: the server describes itself;
    presence and type only.
T6  Material of objects the server generated (Create, Create Key Pair, Re-key, Re-key Key Pair,
    Create Split Key, Certify, Re-certify; Derive Key and Join Split Key from generated inputs):
    Key Material, wrapped Key Value bytes, transparent key components, Digest Value and
    Certificate Value in any batch item that references such an object -> "shape" only (type and
    length; DER key formats only type, as their length varies with the key).
T7  Cryptographic output under a generated key (same batch items as T6): Encrypt Data and
    Authenticated Encryption Tag, Sign Signature Data, MAC MAC Data -> shape. Decrypt Data too,
    unless the ciphertext sent was itself server output (then the plaintext is known: exact).
T8  Server-chosen IV: an Encrypt request without IV Counter Nonce that gets one back from the
    server -> IV Counter Nonce, Data and Authenticated Encryption Tag of that response -> shape.
T9  Randomised algorithms: Encrypt with an RSA key (OAEP and PKCS#1 v1.5 padding are randomised);
    Sign with a DSA/ECDSA key or PSS padding -> Data / Signature Data shape.
T10 RNG Retrieve Data -> shape.
T11 Query response payloads list the server's own capabilities (operations, object types,
    profiles, capability/RNG/validation information...): the vectors record the author's server,
    and different vectors list different operations in different orders, so no server can match
    them all. Each kind of item (tag) the vector expects must be present; values are not compared.
T13 GetAttributeList: the spec gives the list of names no order, so names (1.x) and references
    (2.x) are compared as a multiset; every name must be there, and nothing else.
T12 The Random Number Generator attribute describes the generator of the server that made the key
    (the vectors' author used ANSI X9.31 with AES-256; ours is the OS CSPRNG): present, a
    structure; its content is not compared.

Two follow-ups keep later steps meaningful: a vector literal tolerated under T6-T10 is remembered
with the server's actual value, and later requests carrying that literal send the server's value
instead ("echo": CS-BC-M-3 decrypts the ciphertext the vector author's server returned). A request
placeholder no response ever bound (broken vectors CS-BC-M-13-14, CS-AC-M-6-*) takes the latest
value the server returned for the tag the name spells ($MAC_DATA -> MAC Data, $DATA_0 -> Data).
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from kmip.core import enums

from ..protocol.ttlv import Item, Type
from .xml_codec import Placeholder, Template, name_to_tag, tag_to_name, value_to_text, xml_type_name


def _int_enum(cls: type[Enum]) -> type[IntEnum]:
    """An IntEnum twin of a PyKMIP Enum, so members compare equal to the ints in Items."""
    return IntEnum(cls.__name__, {n: int(m.value) for n, m in cls.__members__.items()})  # type: ignore[return-value]


T = _int_enum(enums.Tags)
Op = _int_enum(enums.Operation)
Alg = _int_enum(enums.CryptographicAlgorithm)
Kft = _int_enum(enums.KeyFormatType)
PaddingMethod = _int_enum(enums.PaddingMethod)
ResultStatus = _int_enum(enums.ResultStatus)

_GENERATING_OPS = {Op.CREATE, Op.CREATE_KEY_PAIR, Op.REKEY, Op.REKEY_KEY_PAIR, Op.CREATE_SPLIT_KEY,
                   Op.CERTIFY, Op.RECERTIFY}
_DERIVING_OPS = {Op.DERIVE_KEY, Op.JOIN_SPLIT_KEY}
_OBJECT_OPS = _GENERATING_OPS | _DERIVING_OPS | {Op.REGISTER, Op.IMPORT}
_ID_TAGS = {T.UNIQUE_IDENTIFIER, T.PRIVATE_KEY_UNIQUE_IDENTIFIER, T.PUBLIC_KEY_UNIQUE_IDENTIFIER}
_MATERIAL_TAGS = {T.KEY_MATERIAL, T.KEY_VALUE, T.KEY, T.DIGEST_VALUE, T.CERTIFICATE_VALUE, T.MODULUS,
                  T.PRIVATE_EXPONENT, T.PUBLIC_EXPONENT, T.P, T.Q, T.G, T.X, T.Y, T.J, T.D,
                  T.PRIME_EXPONENT_P, T.PRIME_EXPONENT_Q, T.CRT_COEFFICIENT}
_CRYPTO_OUTPUT = {Op.ENCRYPT: {T.DATA, T.AUTHENTICATED_ENCRYPTION_TAG}, Op.DECRYPT: {T.DATA},
                  Op.SIGN: {T.SIGNATURE_DATA}, Op.MAC: {T.MAC_DATA}}
_DER_FORMATS = {Kft.PKCS_1, Kft.PKCS_8, Kft.X_509, Kft.EC_PRIVATE_KEY, Kft.PKCS_12}
_OPTIONAL_HEADER = {T.CLIENT_CORRELATION_VALUE, T.SERVER_CORRELATION_VALUE}


class UnboundPlaceholder(KeyError):
    """A request needs a value no earlier response provided."""


@dataclass
class ObjectInfo:
    generated: bool
    algorithms: set[int] = field(default_factory=set)
    paddings: set[int] = field(default_factory=set)


@dataclass
class State:
    """What one file's replay has learnt so far; carried from step to step."""

    time_tolerance: float = 120.0
    clock: Callable[[], float] = time.time
    received_at: float | None = None  # arrival of the response being compared (clock() if None)
    request: Item | None = None  # the concrete request that response answers
    bindings: dict[str, object] = field(default_factory=dict)
    objects: dict[str, ObjectInfo] = field(default_factory=dict)
    echoes: dict[tuple[int, object], object] = field(default_factory=dict)
    server_values: set[object] = field(default_factory=set)
    latest: dict[int, object] = field(default_factory=dict)  # tag -> last value the server returned


# -- request side ----------------------------------------------------------------------------------
def substitute(template: Item, state: State, now: float | None = None) -> Item:
    """A concrete copy of a request: placeholders resolved, echoed literals replaced."""
    now = state.clock() if now is None else now
    if template.type == Type.STRUCTURE:
        return Item(template.tag, template.type, [substitute(c, state, now) for c in template.value])
    v = template.value
    if isinstance(v, Placeholder):
        return Item(template.tag, template.type, _resolve(v, template, state, now))
    echoed = state.echoes.get((template.type, v))
    return Item(template.tag, template.type, v if echoed is None else echoed)


def _resolve(ph: Placeholder, item: Item, state: State, now: float) -> object:
    if ph.is_now:
        seconds = now + ph.offset
        return int(seconds * 1_000_000) if item.type == Type.DATE_TIME_EXTENDED else int(seconds)
    if ph.name in state.bindings:
        return state.bindings[ph.name]
    tag = None
    if not ph.name.startswith("UNIQUE_IDENTIFIER_"):  # an unbound id means its Create failed: stop
        try:  # fallback for placeholders no response defines: the tag the name spells
            tag = name_to_tag(re.sub(r"_\d+$", "", ph.name))
        except ValueError:
            pass
    if tag is not None and tag in state.latest:
        return state.latest[tag]
    raise UnboundPlaceholder(f"{ph} is used before any response defined it")


# -- response side ---------------------------------------------------------------------------------
@dataclass
class _Ctx:
    op: int | None = None
    request: Item | None = None  # the request batch item
    generated: bool = False  # T6/T7 apply
    shaped: set[int] = field(default_factory=set)  # tags compared by shape in this batch item
    der: bool = False
    query: bool = False


def compare(expected: Template, actual: Item, state: State) -> list[str]:
    """Human-readable differences (empty = match); binds placeholders into ``state``."""
    if state.received_at is None:
        state.received_at = state.clock()
    diffs: list[str] = []
    _node(expected, actual, tag_to_name(expected.tag), _Ctx(), state, diffs)
    for leaf in _leaves(actual):
        state.latest[leaf.tag] = leaf.value
    state.received_at = None
    return diffs


def _node(exp: Item, act: Item, path: str, ctx: _Ctx, state: State, diffs: list[str],
          attribute_name: str | None = None) -> None:
    if exp.tag != act.tag:
        diffs.append(f"{path}: expected {tag_to_name(exp.tag)}, got {tag_to_name(act.tag)}")
        return
    if exp.type != act.type:
        diffs.append(f"{path}: expected type {xml_type_name(exp.type)}, got {xml_type_name(act.type)}")
        return
    if exp.type == Type.STRUCTURE:
        if ctx.query and exp.tag == T.SERVER_INFORMATION:  # T5
            return
        if exp.tag == T.RANDOM_NUMBER_GENERATOR or (
            exp.tag == T.ATTRIBUTE_VALUE and attribute_name == "Random Number Generator"
        ):  # T12
            return
        _children(exp, act, path, ctx, state, diffs)
        return
    _leaf(exp, act, path, ctx, state, diffs, attribute_name)


def _children(exp: Item, act: Item, path: str, ctx: _Ctx, state: State, diffs: list[str]) -> None:
    e_items, a_items = list(exp.value), list(act.value)  # type: ignore[call-overload]
    if exp.tag == T.RESPONSE_HEADER:  # T3
        e_items = [c for c in e_items if c.tag not in _OPTIONAL_HEADER]
        a_items = [c for c in a_items if c.tag not in _OPTIONAL_HEADER]
    walk = _Walk(path, ctx, state, diffs, _child_names(e_items, a_items), _attribute_names(e_items, a_items))
    walk.batch_index = {id(a): i for i, a in enumerate(c for c in a_items if c.tag == T.BATCH_ITEM)}
    walk.in_message = exp.tag == T.RESPONSE_MESSAGE
    e_segs, a_segs = _segments(e_items), _segments(a_items)
    matcher = difflib.SequenceMatcher(None, [k for k, _ in e_segs], [k for k, _ in a_segs], autojunk=False)
    for op, e0, e1, a0, a1 in matcher.get_opcodes():
        if op == "equal":
            for (_, e_run), (_, a_run) in zip(e_segs[e0:e1], a_segs[a0:a1], strict=True):
                walk.run(e_run, a_run)
        else:
            walk.extra([i for _, run in e_segs[e0:e1] for i in run], [i for _, run in a_segs[a0:a1] for i in run])


def _segments(items: list[Item]) -> list[tuple[tuple[int, str | None], list[Item]]]:
    """Children grouped for alignment: a structure alone (an Attribute with its name), consecutive
    scalars of one tag as one run, so a list (Operations, Attribute Names, ids) is aligned by value."""
    segs: list[tuple[tuple[int, str | None], list[Item]]] = []
    for c in items:
        key = _key(c)
        if c.type != Type.STRUCTURE and segs and segs[-1][0] == key and segs[-1][1][-1].type != Type.STRUCTURE:
            segs[-1][1].append(c)
        else:
            segs.append((key, [c]))
    return segs


@dataclass
class _Walk:
    path: str
    ctx: _Ctx
    state: State
    diffs: list[str]
    names: dict[int, str]
    attrs: dict[int, str | None]
    batch_index: dict[int, int] = field(default_factory=dict)
    in_message: bool = False

    def run(self, e_run: list[Item], a_run: list[Item]) -> None:
        if len(e_run) == len(a_run) == 1:
            self.pair(e_run[0], a_run[0])
            return
        # Align a list of scalars by value; placeholders and shaped values match nothing, so they
        # land in equal-sized "replace" blocks and are compared (and bound) pairwise.
        e_keys = [e.value if self._literal(e) else object() for e in e_run]
        matcher = difflib.SequenceMatcher(None, e_keys, [a.value for a in a_run], autojunk=False)
        for _op, e0, e1, a0, a1 in matcher.get_opcodes():
            n = min(e1 - e0, a1 - a0)
            for e, a in zip(e_run[e0 : e0 + n], a_run[a0 : a0 + n], strict=True):
                self.pair(e, a)
            self.extra(e_run[e0 + n : e1], a_run[a0 + n : a1])

    def _literal(self, e: Item) -> bool:
        return not isinstance(e.value, Placeholder) and e.tag not in self.ctx.shaped and e.tag != T.RESULT_MESSAGE

    def pair(self, e: Item, a: Item) -> None:
        ctx = self.ctx
        name, attribute = self.names[id(e)], self.attrs[id(e)]
        if e.tag == T.BATCH_ITEM and self.in_message:
            ctx = _batch_ctx(a, self.batch_index[id(a)], self.state)
        elif e.tag == T.RESPONSE_PAYLOAD and ctx.op == Op.GET_ATTRIBUTE_LIST:  # T13
            e, a = _names_sorted(e), _names_sorted(a)
        elif e.tag == T.RESPONSE_PAYLOAD and ctx.op == Op.QUERY:  # T11
            have = {c.tag for c in a.value}  # type: ignore[union-attr]
            for tag in dict.fromkeys(c.tag for c in e.value):  # type: ignore[union-attr]
                if tag not in have:
                    self.diffs.append(f"{self.path}/ResponsePayload: no {tag_to_name(tag)} in the Query answer")
            return
        _node(e, a, f"{self.path}/{name}", ctx, self.state, self.diffs, attribute)
        if e.tag == T.BATCH_ITEM and self.in_message:
            _register(a, ctx, self.state)

    def extra(self, missing: list[Item], unexpected: list[Item]) -> None:
        for e in missing:
            self.diffs.append(f"{self.path}/{self.names[id(e)]}: missing (expected {_describe(e, self.attrs[id(e)])})")
        for a in unexpected:
            self.diffs.append(f"{self.path}/{self.names[id(a)]}: unexpected {_describe(a, self.attrs[id(a)])}")


def _names_sorted(payload: Item) -> Item:
    """A GetAttributeList payload with its names/references in a canonical order."""
    names = [c for c in payload.value if c.tag in (T.ATTRIBUTE_NAME, T.ATTRIBUTE_REFERENCE)]  # type: ignore[union-attr]
    rest = [c for c in payload.value if c.tag not in (T.ATTRIBUTE_NAME, T.ATTRIBUTE_REFERENCE)]  # type: ignore[union-attr]
    return Item(payload.tag, payload.type, rest + sorted(names, key=lambda c: (c.type, repr(c.value))))


def _key(item: Item) -> tuple[int, str | None]:
    """Alignment key: the tag, plus the name for (vendor) Attribute structures."""
    if item.tag == T.ATTRIBUTE and item.type == Type.STRUCTURE:
        vendor, name = item.value_of(T.VENDOR_IDENTIFICATION), item.value_of(T.ATTRIBUTE_NAME)
        return item.tag, f"{vendor}:{name}" if vendor else str(name)
    return item.tag, None


def _child_names(e_items: list[Item], a_items: list[Item]) -> dict[int, str]:
    """Path segments: BatchItem[n], Attribute[Name], Tag[n] for repeated tags (1-based)."""
    names: dict[int, str] = {}
    for items in (e_items, a_items):
        counts: dict[int, int] = {}
        total = {t: sum(1 for c in items if c.tag == t) for t in {c.tag for c in items}}
        for c in items:
            counts[c.tag] = counts.get(c.tag, 0) + 1
            name = tag_to_name(c.tag)
            if c.tag == T.ATTRIBUTE and c.type == Type.STRUCTURE:
                name += f"[{_key(c)[1]}]"
            elif c.tag == T.BATCH_ITEM or total[c.tag] > 1:
                name += f"[{counts[c.tag]}]"
            names[id(c)] = name
    return names


def _attribute_names(*lists: list[Item]) -> dict[int, str | None]:
    """For each child, the Attribute Name before it (an Attribute Value's enumeration depends on it)."""
    out: dict[int, str | None] = {}
    for items in lists:
        current = None
        for c in items:
            out[id(c)] = current
            if c.tag == T.ATTRIBUTE_NAME and isinstance(c.value, str):
                current = c.value
    return out


def _describe(item: Item, attribute_name: str | None) -> str:
    if item.type == Type.STRUCTURE:
        return "structure"
    return f"{xml_type_name(item.type)} {value_to_text(item, attribute_name)}"


def _leaf(exp: Item, act: Item, path: str, ctx: _Ctx, state: State, diffs: list[str],
          attribute_name: str | None) -> None:
    ev, av = exp.value, act.value
    if isinstance(ev, Placeholder):
        if ev.is_now:
            _check_now(ev, act, path, state, diffs)
        else:
            _bind(ev, act, path, state, diffs)
        return
    if exp.tag == T.RESULT_MESSAGE or (ctx.query and exp.tag == T.VENDOR_IDENTIFICATION):  # T4, T5
        return
    if exp.tag in ctx.shaped and exp.type in (Type.BYTE_STRING, Type.BIG_INTEGER):  # T6-T10
        if not ctx.der and _size(exp) != _size(act):
            diffs.append(f"{path}: server-chosen value of {_size(exp)} bytes expected, got {_size(act)}")
        state.server_values.add(av)
        if av != ev:
            state.echoes[(exp.type, ev)] = av
        return
    if ev != av:
        e_text, a_text = value_to_text(exp, attribute_name), value_to_text(act, attribute_name)
        diffs.append(f"{path}: expected {e_text}, got {a_text}")


def _size(item: Item) -> int:
    if item.type == Type.BIG_INTEGER:
        return max(8, (int(item.value).bit_length() + 8 + 63) // 64 * 8)  # type: ignore[call-overload]
    return len(item.value)  # type: ignore[arg-type]


def _check_now(ph: Placeholder, act: Item, path: str, state: State, diffs: list[str]) -> None:
    if act.type not in (Type.DATE_TIME, Type.DATE_TIME_EXTENDED):
        diffs.append(f"{path}: expected a DateTime, got {xml_type_name(act.type)}")
        return
    seconds = act.value / 1_000_000 if act.type == Type.DATE_TIME_EXTENDED else act.value  # type: ignore[operator]
    target = (state.received_at or state.clock()) + ph.offset
    if abs(seconds - target) > state.time_tolerance:  # type: ignore[operator]
        diffs.append(
            f"{path}: {value_to_text(act)} is {seconds - target:+.0f}s from {ph} "  # type: ignore[operator]
            f"(tolerance {state.time_tolerance:.0f}s)"
        )


def _bind(ph: Placeholder, act: Item, path: str, state: State, diffs: list[str]) -> None:
    if ph.name in state.bindings:
        if state.bindings[ph.name] != act.value:
            diffs.append(f"{path}: {ph} is {state.bindings[ph.name]!r} from an earlier response, got {act.value!r}")
        return
    if ph.name.startswith("UNIQUE_IDENTIFIER_"):
        for other, value in state.bindings.items():
            if other.startswith("UNIQUE_IDENTIFIER_") and value == act.value:
                diffs.append(f"{path}: {ph} got {act.value!r}, which is already ${other}")
                return
    state.bindings[ph.name] = act.value
    state.server_values.add(act.value)


# -- batch item context (T6-T10) and the object registry ------------------------------------------
def _batch_ctx(act_item: Item, index: int, state: State) -> _Ctx:
    op = act_item.value_of(T.OPERATION)
    request = None
    if state.request is not None:
        items = state.request.all(T.BATCH_ITEM)
        request = items[index] if index < len(items) else None
    ctx = _Ctx(op=op, request=request)  # type: ignore[arg-type]
    ids = _ids(act_item) | (_ids(request) if request is not None else set())
    infos = [state.objects[i] for i in ids if i in state.objects]
    ctx.generated = any(i.generated for i in infos)
    if ctx.generated:  # T6, T7
        ctx.shaped |= _MATERIAL_TAGS | _CRYPTO_OUTPUT.get(op, set())  # type: ignore[call-overload]
        if op == Op.DECRYPT and request is not None and request.get(T.REQUEST_PAYLOAD) is not None:
            sent = request.get(T.REQUEST_PAYLOAD).value_of(T.DATA)  # type: ignore[union-attr]
            if sent in state.server_values:
                ctx.shaped.discard(T.DATA)
    payload = request.get(T.REQUEST_PAYLOAD) if request is not None else None
    returned = act_item.get(T.RESPONSE_PAYLOAD)
    if (op == Op.ENCRYPT and payload is not None and payload.get(T.IV_COUNTER_NONCE) is None
            and returned is not None and returned.get(T.IV_COUNTER_NONCE) is not None):  # T8
        ctx.shaped |= {T.IV_COUNTER_NONCE, T.DATA, T.AUTHENTICATED_ENCRYPTION_TAG}
    algorithms = {a for i in infos for a in i.algorithms} | _enums(request, T.CRYPTOGRAPHIC_ALGORITHM)
    paddings = {p for i in infos for p in i.paddings} | _enums(request, T.PADDING_METHOD)
    if op == Op.ENCRYPT and Alg.RSA in algorithms:  # T9
        ctx.shaped.add(T.DATA)
    if op == Op.SIGN and (algorithms & {Alg.DSA, Alg.ECDSA, Alg.EC} or PaddingMethod.PSS in paddings):
        ctx.shaped.add(T.SIGNATURE_DATA)
    if op == Op.RNG_RETRIEVE:  # T10
        ctx.shaped.add(T.DATA)
    ctx.der = any(f in _DER_FORMATS for f in _enums(act_item, T.KEY_FORMAT_TYPE))
    return ctx


def _register(act_item: Item, ctx: _Ctx, state: State) -> None:
    """Remembers the objects a successful batch item made, and whether the server chose their bytes."""
    if ctx.op not in _OBJECT_OPS or act_item.value_of(T.RESULT_STATUS) != ResultStatus.SUCCESS:
        return
    payload = act_item.get(T.RESPONSE_PAYLOAD)
    if payload is None:
        return
    generated = ctx.op in _GENERATING_OPS or (ctx.op in _DERIVING_OPS and ctx.generated)
    algorithms = _enums(ctx.request, T.CRYPTOGRAPHIC_ALGORITHM)
    paddings = _enums(ctx.request, T.PADDING_METHOD)
    for object_id in _ids(payload):
        state.objects[object_id] = ObjectInfo(generated, set(algorithms), set(paddings))


def _leaves(item: Item | None) -> Iterator[Item]:
    if item is None:
        return
    if item.type == Type.STRUCTURE:
        for child in item.value:  # type: ignore[union-attr]
            yield from _leaves(child)
    else:
        yield item


def _ids(item: Item | None) -> set[str]:
    return {x.value for x in _leaves(item) if x.tag in _ID_TAGS and isinstance(x.value, str)}  # type: ignore[misc]


def _enums(item: Item | None, tag: T) -> set[int]:
    """Values of ``tag`` anywhere below ``item``, also as 1.x Attribute name/value pairs."""
    found: set[int] = set()
    if item is None or item.type != Type.STRUCTURE:
        return found
    wanted = tag_to_name(tag.value).lower()
    name = None
    for child in item.value:  # type: ignore[union-attr]
        if child.tag == tag and child.type == Type.ENUMERATION:
            found.add(child.value)  # type: ignore[arg-type]
        elif child.tag == T.ATTRIBUTE_NAME and isinstance(child.value, str):
            name = child.value.replace(" ", "").lower()
        elif child.tag == T.ATTRIBUTE_VALUE and child.type == Type.ENUMERATION and name == wanted:
            found.add(child.value)  # type: ignore[arg-type]
        else:
            found |= _enums(child, tag)
    return found
