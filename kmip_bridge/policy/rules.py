"""Operation policies from ``policies/*.yaml``: which groups may run which operations on which
object types, on their own objects (``scope: owner``) or on anyone's (``scope: any``).

A file::

    policy: default                 # the name objects select with Operation Policy Name
    rules:
      - groups: ["*"]               # "*" = every authenticated identity
        objects: ["*"]              # object types: SymmetricKey, SecretData, ... or "*"
        operations: ["*"]           # KMIP operation names: Create, Get, ... or "*";
                                    # also WrapKey: use the object as the wrapping key of a Get
        scope: owner                # owner | any

Validation walks the YAML node tree so that every error names file, line and problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from kmip.core.enums import ObjectType, Operation


class PolicyError(ValueError):
    """A policy file is invalid; the message reads 'FILE:LINE: problem'."""


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Using a key as the *wrapping* key of a Get (Key Wrapping Specification) is a grant of its own:
# permission to Get a key is not permission to encrypt under it. Not a KMIP operation, so its
# value sits in the vendor extension range (0x8XXXXXXX), where no KMIP operation can collide.
WRAP_KEY = 0x8000_0101
_OPERATIONS = {_norm(op.name): op.value for op in Operation}
_OPERATIONS[_norm("WrapKey")] = WRAP_KEY
_OBJECT_TYPES = {_norm(t.name): t.value for t in ObjectType}
_OBJECT_TYPES[_norm("OpaqueObject")] = ObjectType.OPAQUE_DATA.value

ANY = "*"
SCOPES = ("owner", "any")


@dataclass(frozen=True)
class Rule:
    groups: frozenset[str]
    objects: frozenset[int] | None  # None: every object type
    operations: frozenset[int] | None  # None: every operation
    scope: str

    def covers(self, groups: frozenset[str], operation: int | None, object_type: int | None) -> bool:
        if ANY not in self.groups and not (self.groups & groups):
            return False
        if operation is not None and self.operations is not None and operation not in self.operations:
            return False
        return object_type is None or self.objects is None or object_type in self.objects


@dataclass(frozen=True)
class OperationPolicy:
    name: str
    source: str
    rules: tuple[Rule, ...]

    def allows(self, groups: frozenset[str], operation: int, object_type: int | None, owned: bool) -> bool:
        return any(
            r.covers(groups, operation, object_type) and (owned or r.scope == "any") for r in self.rules
        )

    def sees(self, groups: frozenset[str], object_type: int, owned: bool) -> bool:
        """Whether any operation at all is granted on such an object (otherwise it is invisible)."""
        return any(r.covers(groups, None, object_type) and (owned or r.scope == "any") for r in self.rules)

    def any_scope_types(self, groups: frozenset[str], operation: int) -> frozenset[int] | None:
        """Object types whose objects of *other* owners this operation may reach (None = all)."""
        types: set[int] = set()
        for r in self.rules:
            if r.scope == "any" and r.covers(groups, operation, None):
                if r.objects is None:
                    return None
                types |= r.objects
        return frozenset(types)


# The policy used when no file says otherwise: every identity may do everything to its own objects.
DEFAULT = OperationPolicy(
    name="default",
    source="<built-in>",
    rules=(Rule(frozenset({ANY}), None, None, "owner"),),
)


def _fail(source: str, node: yaml.Node, problem: str) -> PolicyError:
    return PolicyError(f"{source}:{node.start_mark.line + 1}: {problem}")


def _names(source: str, node: yaml.Node, key: str) -> list[tuple[str, yaml.Node]]:
    if not isinstance(node, yaml.SequenceNode):
        raise _fail(source, node, f"'{key}' must be a list")
    out = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or not item.value:
            raise _fail(source, item, f"'{key}' entries must be names")
        out.append((str(item.value), item))
    return out


def _lookup(source: str, entries: list[tuple[str, yaml.Node]], table: dict[str, int], what: str
            ) -> frozenset[int] | None:
    values = set()
    for name, node in entries:
        if name == ANY:
            return None
        value = table.get(_norm(name))
        if value is None:
            raise _fail(source, node, f"unknown {what} '{name}'")
        values.add(value)
    return frozenset(values)


def _rule(source: str, node: yaml.Node) -> Rule:
    if not isinstance(node, yaml.MappingNode):
        raise _fail(source, node, "each rule must be a mapping")
    fields = {k.value: v for k, v in node.value}
    for k, _v in node.value:
        if k.value not in ("groups", "objects", "operations", "scope"):
            raise _fail(source, k, f"unknown rule key '{k.value}' (groups, objects, operations, scope)")
    for required in ("groups", "operations"):
        if required not in fields:
            raise _fail(source, node, f"rule needs '{required}'")
    groups = frozenset(name for name, _ in _names(source, fields["groups"], "groups"))
    objects = (
        _lookup(source, _names(source, fields["objects"], "objects"), _OBJECT_TYPES, "object type")
        if "objects" in fields
        else None
    )
    operations = _lookup(source, _names(source, fields["operations"], "operations"), _OPERATIONS, "operation")
    scope_node = fields.get("scope")
    scope = "owner" if scope_node is None else str(scope_node.value)
    if scope not in SCOPES:
        raise _fail(source, scope_node, f"scope must be one of {', '.join(SCOPES)}")  # type: ignore[arg-type]
    return Rule(groups, objects, operations, scope)


def parse_policy(text: str, source: str) -> OperationPolicy:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise PolicyError(f"{source}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(root, yaml.MappingNode):
        raise PolicyError(f"{source}:1: a policy file must be a mapping with 'policy' and 'rules'")
    fields = {k.value: (k, v) for k, v in root.value}
    for key, (knode, _v) in fields.items():
        if key not in ("policy", "rules"):
            raise _fail(source, knode, f"unknown key '{key}' (policy, rules)")
    if "policy" not in fields or "rules" not in fields:
        raise PolicyError(f"{source}:1: a policy file needs 'policy' (its name) and 'rules'")
    name_node = fields["policy"][1]
    if not isinstance(name_node, yaml.ScalarNode) or not name_node.value:
        raise _fail(source, name_node, "'policy' must be a name")
    rules_node = fields["rules"][1]
    if not isinstance(rules_node, yaml.SequenceNode):
        raise _fail(source, rules_node, "'rules' must be a list")
    return OperationPolicy(str(name_node.value), source, tuple(_rule(source, r) for r in rules_node.value))


def load_directory(directory: Path | None) -> dict[str, OperationPolicy]:
    """Every ``*.yaml`` in the directory by policy name; the built-in default unless overridden."""
    policies = {DEFAULT.name: DEFAULT}
    if directory is None:
        return policies
    if not directory.is_dir():
        raise PolicyError(f"{directory}: policy directory does not exist")
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "identities.yaml":
            continue
        policy = parse_policy(path.read_text(), str(path))
        if policy.name in seen:
            raise PolicyError(f"{path}:1: policy '{policy.name}' is also defined in {seen[policy.name]}")
        seen[policy.name] = str(path)
        policies[policy.name] = policy
    return policies
