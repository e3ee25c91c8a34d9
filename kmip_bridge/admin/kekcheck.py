"""Do the token's KEKs open the database's objects? Run after a restore (and by hand): a backup
restored next to a token that lacks its KEKs yields irretrievable objects, by design, and the
operator should hear so at once rather than from the first failed Get."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..keyhsm import IntegrityError, KekRevoked, KeyHsmError, per_object
from ..operations.objects import _aad_context, sealed_of
from ..store import Store


@dataclass(frozen=True)
class KekProblem:
    label: str
    objects: int
    why: str

    def __str__(self) -> str:
        return f"KEK '{self.label}' ({self.objects} objects): {self.why}"


def check_keks(hsm: Any, store: Store) -> list[KekProblem]:
    """One problem per KEK label that seals objects in the database but cannot open them: absent
    from the token, or present under that label but not the key they were sealed with (another
    token). The second is found by opening one object per label; its material is dropped."""
    counts = store.count_by_kek()
    on_token = {k.label for k in hsm.list_keks()}
    problems = []
    own = {label: n for label, n in counts.items() if per_object.parse_label(label) is not None}
    if own:
        keys = {k.label for k in hsm.list_object_keys()}
        missing = sum(n for label, n in own.items() if label not in keys)
        if missing:
            problems.append(KekProblem(
                "per-object", missing, "their per-object keys are absent from the token: these objects are "
                "irretrievable (destroyed after the backup was taken, or another token)",
            ))
    for label, n in sorted(counts.items()):
        if label in own:
            continue
        if label not in on_token:
            problems.append(KekProblem(label, n, "absent from the token: these objects are irretrievable"))
            continue
        rows = store.sealed_under([label], "", 1)
        if not rows:
            continue
        row = rows[0]
        try:
            hsm.open(row.uid, sealed_of(row), _aad_context(row.object_type))
        except KekRevoked:
            problems.append(KekProblem(label, n, "absent from the token: these objects are irretrievable"))
        except IntegrityError:
            problems.append(KekProblem(
                label, n, f"the token's key of that name does not open object {row.uid} (a different "
                "token, or a tampered row): objects under it are probably irretrievable",
            ))
        except KeyHsmError as exc:
            problems.append(KekProblem(label, n, f"could not be checked: {exc}"))
    return problems
