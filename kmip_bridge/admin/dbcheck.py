"""`kmip-bridge db check`: the integrity check of the store, after a crash or a restore.

What must hold (docs/architecture.md, Store): every object row is whole — a live object has its
complete sealed envelope (material, nonce, wrapped DEK, a well-formed KEK label and kind), a
destroyed one has none of it; no attribute row without its object; every Link names an object that
exists; every attribute value is well-formed TTLV; the schema is at the code's revision. With
``open_material`` every live object is also unsealed through the Key HSM (proves that material,
wrapped DEK and KEK belong together; reads never print or keep the material).

Read-only, in pages ordered by uid, so it runs beside a live server and in bounded memory.

Per-object keys (keyhsm.per_object) are checked against the token when the check has the Key HSM
(``check_object_keys``): a live row whose key is gone is irretrievable (reported; typical after
restoring a backup older than a Destroy, by design); a key whose row is destroyed or absent is an
orphan — a crash between Destroy's commit and the key's destruction, or a create whose row was
never written — and ``repair`` (the sweep, ``db check --repair``) destroys it. A key without a row
is only called an orphan once older than ``grace`` seconds: a create in flight makes the key
before it writes the row.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from kmip.core.enums import State
from kmip.core.enums import Tags as T

from ..keyhsm import IntegrityError, KekRevoked, KeyHsmError, envelope, per_object
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
    object_keys: int = 0  # per-object keys on the token (when checked)
    repaired: int = 0  # orphan per-object keys destroyed by repair
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
    except per_object.ObjectKeyDestroyed as exc:
        report.add("object-key-missing", f"{row.uid}: {exc}")
    except KekRevoked as exc:
        report.add("kek-revoked", f"{row.uid}: {exc}")
    except IntegrityError as exc:
        report.add("does-not-open", f"{row.uid}: {exc}")
    except KeyHsmError:
        raise  # the token is unusable: no verdict on this object, stop (the caller reports it)


def check_object_keys(
    engine: sa.Engine, hsm: Any, report: Report, opened: bool = False, repair: bool = False,
    grace: float = 600.0, now: float | None = None,
) -> None:
    """Per-object keys against rows (see the module docstring). ``opened``: the rows were opened
    already, so a missing key was reported as such."""
    keys = {k.label: k for k in hsm.list_object_keys()}
    report.object_keys = len(keys)
    live: set[str] = set()
    rows: dict[str, str] = {}  # label -> uid, every per-object row (live or destroyed)
    after = ""
    with engine.connect() as conn:
        while True:
            page = conn.execute(
                sa.select(objects.c.uid, objects.c.kek_label, objects.c.ciphertext.is_not(None).label("live"))
                .where(objects.c.kek_kind.in_(per_object.KINDS), objects.c.uid > after)
                .order_by(objects.c.uid).limit(PAGE)
            ).all()
            if not page:
                break
            for rec in page:
                rows[rec.kek_label] = rec.uid
                if rec.live:
                    live.add(rec.kek_label)
            after = page[-1].uid
    if not opened:
        for label in sorted(live - set(keys)):
            report.add("object-key-missing", f"{rows[label]}: its per-object key '{label}' is not on the token "
                       "(destroyed after this database was backed up, or another token): irretrievable")
    t = time.time() if now is None else now
    orphans = []
    for label, key in sorted(keys.items()):
        if label in live:
            continue
        if label in rows:
            orphans.append((label, f"{rows[label]}: destroyed, but its per-object key '{label}' is still on the token"))
        elif t - key.created >= grace:
            orphans.append((label, f"per-object key '{label}' has no object row (a create that never completed)"))
    for label, message in orphans:
        if repair:
            hsm.destroy_object_key(label)  # False: gone meanwhile (Destroy's own step ran)
            report.repaired += 1
            continue
        report.add("orphan-object-key", message + " (repair: db check --repair)")


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
    if report.object_keys or report.repaired:
        lines.append(f"per-object keys on the token {report.object_keys}"
                     + (f", orphans destroyed {report.repaired}" if report.repaired else ""))
    lines += [f"PROBLEM {p}" for p in report.problems]
    if len(report.problems) < sum(report.kinds.values()):
        lines.append(f"... and {sum(report.kinds.values()) - len(report.problems)} more")
    if report.ok:
        lines.append("store OK")
    else:
        summary = ", ".join(f"{k} {n}" for k, n in sorted(report.kinds.items()))
        lines.append(f"store DAMAGED: {summary}")
    return "\n".join(lines)
