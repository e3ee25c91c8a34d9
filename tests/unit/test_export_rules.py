"""The pieces of the export rules that need no server: attribute types, the work budget, the
WrapKey grant in policy files, and how a derived object's protection is computed."""

from __future__ import annotations

from pathlib import Path

import pytest
from kmip.core.enums import AttributeType, Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.operations import export, objects
from kmip_bridge.operations.context import RequestContext, Services
from kmip_bridge.policy import Identity
from kmip_bridge.policy.rules import WRAP_KEY, PolicyError, parse_policy
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.attributes import TYPES, Attribute, type_problem
from kmip_bridge.protocol.errors import KmipError
from kmip_bridge.protocol.ttlv import Item, Type


def _attr(name: str, type_: Type, value: object) -> Attribute:
    return Attribute(name, Item(T.ATTRIBUTE_VALUE.value, type_, value))


def _ctx(budget: int = 1000, version: tuple[int, int] = (1, 4)) -> RequestContext:
    services = Services(keyhsm=None, store=None, policy=None, max_request_work=budget)  # type: ignore[arg-type]
    return RequestContext(services=services, identity=Identity("alice"), peer="test", version=version)


# -- attribute types ----------------------------------------------------------------------------------
def test_every_standard_attribute_has_a_type() -> None:
    missing = [a.value for a in AttributeType if a.value not in TYPES and a.value != "Custom Attribute"]
    assert missing == []


@pytest.mark.parametrize("attr", [
    _attr("Sensitive", Type.INTEGER, 1),
    _attr("Extractable", Type.INTEGER, 0),
    _attr("Cryptographic Usage Mask", Type.TEXT_STRING, "all"),
    _attr("Cryptographic Usage Mask", Type.LONG_INTEGER, 12),
    _attr("Cryptographic Usage Mask", Type.INTEGER, -4),
    _attr("Activation Date", Type.INTEGER, 5),
    _attr("Name", Type.TEXT_STRING, "n"),
    _attr("Operation Policy Name", Type.INTEGER, 1),
])
def test_wrong_types_are_named(attr: Attribute) -> None:
    problem = type_problem(attr)
    assert problem is not None and attr.name in problem


@pytest.mark.parametrize("attr", [
    _attr("Sensitive", Type.BOOLEAN, True),
    _attr("Cryptographic Usage Mask", Type.INTEGER, 12),
    _attr("Lease Time", Type.INTERVAL, 3600),
    _attr("x-anything", Type.INTEGER, 3),  # custom attributes take any type
])
def test_right_types_pass(attr: Attribute) -> None:
    assert type_problem(attr) is None


def test_client_attributes_refuse_a_mistyped_value() -> None:
    with pytest.raises(KmipError) as err:
        objects.client_attributes([_attr("Extractable", Type.INTEGER, 0)])
    assert err.value.reason == ResultReason.INVALID_FIELD.value


def test_old_rows_read_protectively() -> None:
    # A non-Boolean flag in an old row reads as the protective answer, not the permissive one.
    assert objects.flag(0, True) is False and objects.flag(1, False) is True
    assert objects.flag(None, True) is True and objects.flag(False, True) is False


# -- the work budget ----------------------------------------------------------------------------------
def test_work_budget_is_per_request_and_refuses_before_the_work() -> None:
    ctx = _ctx(budget=1000)
    ctx.charge_work(600, "one")
    with pytest.raises(KmipError) as err:
        ctx.charge_work(500, "two")
    assert err.value.reason == ResultReason.INVALID_FIELD.value
    assert "server.max_request_work" in err.value.message
    assert ctx.work_spent == 600  # the refused charge is not counted
    ctx.charge_work(400, "three")
    assert _ctx(budget=1000).work_spent == 0  # a new message starts afresh


# -- policy: WrapKey ----------------------------------------------------------------------------------
def _policy(operations: str) -> str:
    return f"policy: p\nrules:\n  - groups: [g]\n    operations: {operations}\n    scope: any\n"


def test_wrapkey_is_its_own_grant() -> None:
    groups = frozenset({"g"})
    get_only = parse_policy(_policy("[Get]"), "p.yaml")
    assert get_only.allows(groups, Operation.GET.value, None, owned=False)
    assert not get_only.allows(groups, WRAP_KEY, None, owned=False)
    wrap = parse_policy(_policy("[WrapKey]"), "p.yaml")
    assert wrap.allows(groups, WRAP_KEY, None, owned=False)
    assert not wrap.allows(groups, Operation.GET.value, None, owned=False)
    assert parse_policy(_policy('["*"]'), "p.yaml").allows(groups, WRAP_KEY, None, owned=False)
    with pytest.raises(PolicyError, match="unknown operation 'Wrap'"):
        parse_policy(_policy("[Wrap]"), "p.yaml")


def test_shipped_policies_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "policies"
    names = {parse_policy(p.read_text(), str(p)).name for p in root.glob("*.yaml") if p.name != "identities.yaml"}
    assert {"default", "shared-readonly", "shared-wrap"} <= names


# -- derived protection ---------------------------------------------------------------------------------
P = export.Protection


@pytest.mark.parametrize("inputs, sensitive, extractable, always, never", [
    ([P(), P()], None, None, False, False),
    ([P(extractable=False, never_extractable=True)], None, False, False, True),
    ([P(), P(extractable=False, never_extractable=True)], None, False, False, False),
    ([P(sensitive=True, always_sensitive=True), P(sensitive=True, always_sensitive=True)], True, None, True, False),
    ([P(), P(sensitive=True, always_sensitive=True)], True, None, False, False),
])
def test_derived_protection_follows_the_most_protected_input(
    inputs: list[export.Protection], sensitive: bool | None, extractable: bool | None, always: bool, never: bool,
) -> None:
    attrs, history = export.derived_protection(_ctx(), inputs, [])
    given = {a.name: a.value.value for a in attrs}
    assert given.get("Sensitive") == sensitive and given.get("Extractable") == extractable
    assert (history.always_sensitive, history.never_extractable) == (
        all(p.always_sensitive for p in inputs), all(p.never_extractable for p in inputs))
    # What insert_new stamps from them (Always/Never need the derived object's own flag too).
    stamped = {a.name: a.value.value for a in objects._protection_defaults(attrs, history)}
    assert stamped["Always Sensitive"] is always and stamped["Never Extractable"] is never


def test_derived_protection_refuses_a_weaker_template() -> None:
    weaker = [Attribute("Extractable", ttlv.boolean(T.ATTRIBUTE_VALUE, True))]
    with pytest.raises(KmipError) as err:
        export.derived_protection(_ctx(), [P(extractable=False)], weaker)
    assert err.value.reason == ResultReason.NOT_EXTRACTABLE.value
    with pytest.raises(KmipError) as err:
        export.derived_protection(_ctx(version=(1, 2)), [P(extractable=False)], weaker)
    assert err.value.reason == ResultReason.PERMISSION_DENIED.value  # 1.x has no finer reason
