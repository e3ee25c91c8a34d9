"""An object's State as a function of its stored state and its dates (KMIP State attribute).

The stored state records what operations did (Activate, Revoke, Destroy); the dates make the
transitions the specification ties to time: a Pre-Active object becomes Active when its
Activation Date is reached, and a Pre-Active or Active one becomes Deactivated when its
Deactivation Date is. No background job moves rows: every read of an object (``load_object``)
and every Locate by State applies the same rule, here in Python and as SQL, so GetAttributes,
Locate and the checks of every operation always agree. (Process Start / Protect Stop Date do not
change the State; they restrict use, checked in operations/keyuse.py.)
"""

from __future__ import annotations

import sqlalchemy as sa
from kmip.core.enums import State

from .models import attributes, objects

PRE_ACTIVE, ACTIVE, DEACTIVATED = State.PRE_ACTIVE.value, State.ACTIVE.value, State.DEACTIVATED.value
ACTIVATION, DEACTIVATION = "Activation Date", "Deactivation Date"


def _reached(date: object, now: int) -> bool:
    # The search key of a Date-Time attribute is its seconds since the epoch, as text.
    try:
        return date is not None and int(date) <= now  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def effective_state(stored: int, activation: object, deactivation: object, now: int) -> int:
    if stored not in (PRE_ACTIVE, ACTIVE):
        return stored
    if _reached(deactivation, now):
        return DEACTIVATED
    if stored == PRE_ACTIVE and _reached(activation, now):
        return ACTIVE
    return stored


def _date_reached(name: str, now: int) -> sa.ColumnElement[bool]:
    number = sa.case((attributes.c.name == name, sa.cast(attributes.c.search, sa.BigInteger)))
    return sa.exists().where(attributes.c.uid == objects.c.uid, attributes.c.name == name, number <= now)


def state_condition(state: int, now: int) -> sa.ColumnElement[bool]:
    """SQL: the object's effective state (``effective_state``) is ``state``."""
    activated = _date_reached(ACTIVATION, now)
    deactivated = _date_reached(DEACTIVATION, now)
    if state == PRE_ACTIVE:
        return sa.and_(objects.c.state == PRE_ACTIVE, sa.not_(activated), sa.not_(deactivated))
    if state == ACTIVE:
        became = sa.and_(objects.c.state == PRE_ACTIVE, activated)
        return sa.and_(sa.or_(objects.c.state == ACTIVE, became), sa.not_(deactivated))
    if state == DEACTIVATED:
        return sa.or_(objects.c.state == DEACTIVATED,
                      sa.and_(objects.c.state.in_([PRE_ACTIVE, ACTIVE]), deactivated))
    return objects.c.state == state
