"""`kmip-bridge db check`: the integrity check of the store, after a crash or a restore.

What must hold (docs/architecture.md, Store): every object row is whole — a live object has its
complete sealed envelope (material, nonce, wrapped DEK, a well-formed KEK label and kind), a
destroyed one has none of it; no attribute row without its object; every Link names an object that
exists; every attribute value is well-formed TTLV; the schema is at the code's revision. With
``open_material`` every live object is also unsealed through the Key HSM (proves that material,
wrapped DEK and KEK belong together; reads never print or keep the material).

Read-only, in pages ordered by uid, so it runs beside a live server and in bounded memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from kmip.core.enums import State
from kmip.core.enums import Tags as T

from ..keyhsm import IntegrityError, KekRevoked, KeyHsmError, envelope
from ..operations.objects import _aad_context, sealed_of
from ..protocol import ttlv
from ..store import ObjectRow
from ..store.migrate import pending
from ..store.models import attributes, objects

PAGE = 500
MAX_LISTED = 50  # problems printed in full; the count is always exact
_DESTROYED = (State.DESTROYED.value, State.DESTROYED_COMPROMISED.value)
_STATES = {s.value for s in State}
_SEALED = ("nonce", "ciphertext", "wrapped_dek", "wrap_nonce")


@dataclass
class Report:
    objects: int = 0
    live: int = 0
    destroyed: int = 0
    attributes: int = 0
    opened: int = 0
    problems: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)  # problem kind -> count

    def add(self, kind: str, message: str) -> None:
        self.kinds[kind] += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(message)

    @property
    def ok(self) -> bool:
        return not self.kinds


def check(engine: sa.Engine, open_material: Callable[[str, object, str], bytes] | None = None) -> Report:
    """Checks the store behind ``engine``; ``open_material`` is KeyHsm.open (or None)."""
    report = Report()
    if pending(engine):
        report.add("schema", "schema is not current: run 'kmip-bridge db upgrade --config FILE'")
        return report  # the rows may not have the columns this check reads
    uids: set[str] = set()
    after = ""
    with engine.connect() as conn:
        while True:
            page = conn.execute(
                sa.select(objects).where(objects.c.uid > after).order_by(objects.c.uid).limit(PAGE)
            ).all()
            if not page:
                break
            for rec in page:
                row = ObjectRow(**rec._mapping)
                uids.add(row.uid)
                _check_row(row, report, open_material)
            after = page[-1].uid
        _check_attributes(conn, uids, report)
    return report


def _check_row(row: ObjectRow, report: Report, open_material: Callable[..., bytes] | None) -> None:
    report.objects += 1
    if row.state not in _STATES:
        report.add("state", f"{row.uid}: unknown state {row.state}")
    if row.row_version < 1:
        report.add("row_version", f"{row.uid}: row_version {row.row_version} < 1")
    present = [c for c in _SEALED if getattr(row, c) is not None]
    if row.state in _DESTROYED:
        report.destroyed += 1
        if present:
            report.add("destroyed-with-material", f"{row.uid}: destroyed but still holds {', '.join(present)}")
        return
    report.live += 1
    if len(present) != len(_SEALED) or not row.kek_label or not row.kek_kind:
        missing = [c for c in (*_SEALED, "kek_label", "kek_kind") if getattr(row, c) in (None, "")]
        report.add("half-written", f"{row.uid}: live object without {', '.join(missing)}")
        return
    sealed = sealed_of(row)
    try:
        envelope.validate(sealed)
    except IntegrityError as exc:
        report.add("malformed-envelope", f"{row.uid}: {exc}")
        return
    if open_material is None:
        return
    try:
        open_material(row.uid, sealed, _aad_context(row.object_type))
        report.opened += 1
    except KekRevoked as exc:
        report.add("kek-revoked", f"{row.uid}: {exc}")
    except IntegrityError as exc:
        report.add("does-not-open", f"{row.uid}: {exc}")
    except KeyHsmError:
        raise  # the token is unusable: no verdict on this object, stop (the caller reports it)


def _check_attributes(conn: sa.Connection, uids: set[str], report: Report) -> None:
    after = 0
    while True:
        page = conn.execute(
            sa.select(attributes.c.id, attributes.c.uid, attributes.c.name, attributes.c.value)
            .where(attributes.c.id > after)
            .order_by(attributes.c.id)
            .limit(PAGE)
        ).all()
        if not page:
            return
        for rec in page:
            report.attributes += 1
            if rec.uid not in uids:
                report.add("orphan-attribute", f"attribute row {rec.id} ({rec.name}) has no object {rec.uid}")
                continue
            try:
                item = ttlv.decode(rec.value)
            except ttlv.TtlvError as exc:
                report.add("bad-attribute", f"{rec.uid}: attribute {rec.name} is not valid TTLV ({exc})")
                continue
            if rec.name == "Link":
                target = _linked_uid(item)
                if target is not None and target not in uids:
                    report.add("dangling-link", f"{rec.uid}: Link to {target}, which does not exist")
        after = page[-1].id


def _linked_uid(item: ttlv.Item) -> str | None:
    for child in item.value if isinstance(item.value, list) else []:
        if child.tag == T.LINKED_OBJECT_IDENTIFIER.value and isinstance(child.value, str):
            return child.value
    return None


def render(report: Report, url: str) -> str:
    """The report a person reads: counts, then each problem (at most MAX_LISTED), then the verdict."""
    lines = [
        f"database {url}",
        f"objects {report.objects} (live {report.live}, destroyed {report.destroyed}), "
        f"attribute rows {report.attributes}"
        + (f", opened through the Key HSM {report.opened}" if report.opened else ""),
    ]
    lines += [f"PROBLEM {p}" for p in report.problems]
    if len(report.problems) < sum(report.kinds.values()):
        lines.append(f"... and {sum(report.kinds.values()) - len(report.problems)} more")
    if report.ok:
        lines.append("store OK")
    else:
        summary = ", ".join(f"{k} {n}" for k, n in sorted(report.kinds.items()))
        lines.append(f"store DAMAGED: {summary}")
    return "\n".join(lines)
