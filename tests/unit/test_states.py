"""store/states.py: the effective State, in Python and as the SQL Locate uses (SQLite)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from kmip.core.enums import State

from kmip_bridge.store import states
from kmip_bridge.store.models import attributes, metadata, objects

NOW = 1_000_000
PA, A, D, C, X = (State.PRE_ACTIVE.value, State.ACTIVE.value, State.DEACTIVATED.value,
                  State.COMPROMISED.value, State.DESTROYED.value)
CASES = [  # stored, activation, deactivation, effective
    (PA, None, None, PA), (PA, NOW + 5, None, PA), (PA, NOW, None, A), (PA, NOW - 5, NOW + 5, A),
    (PA, NOW - 5, NOW - 1, D), (PA, None, NOW - 1, D), (A, None, None, A), (A, NOW - 9, NOW, D),
    (A, None, NOW + 1, A), (D, None, None, D), (C, NOW - 9, NOW - 1, C), (X, NOW - 9, None, X),
]


def _key(when: int | None) -> str | None:
    return None if when is None else str(when)


@pytest.mark.parametrize("stored,act,deact,effective", CASES)
def test_effective_state(stored: int, act: int | None, deact: int | None, effective: int) -> None:
    # Search keys are text (as stored); a bad one counts as no date.
    assert states.effective_state(stored, _key(act), _key(deact), NOW) == effective
    assert states.effective_state(stored, "not a date", None, NOW) == stored


def test_sql_agrees_with_python() -> None:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    required = {c.name for c in objects.columns if not c.nullable and c.default is None and c.server_default is None}
    with engine.begin() as conn:
        for i, (stored, act, deact, _) in enumerate(CASES):
            row = {"uid": f"u{i}", "object_type": 2, "state": stored, "owner": "o", "created_at": i}
            for name in required - row.keys():
                row[name] = 0 if isinstance(objects.c[name].type, sa.Integer) else ""
            conn.execute(objects.insert().values(**row))
            for name, when in (("Activation Date", act), ("Deactivation Date", deact)):
                if when is not None:
                    conn.execute(attributes.insert().values(uid=f"u{i}", name=name, value=b"", position=0,
                                                            search=str(when)))
        for state in (PA, A, D, C, X):
            got = {r.uid for r in conn.execute(sa.select(objects.c.uid).where(states.state_condition(state, NOW)))}
            want = {f"u{i}" for i, case in enumerate(CASES) if case[3] == state}
            assert got == want, State(state).name
