"""Load that remembers what it was told: clients create, register, read and destroy objects and
record, per object, what the server acknowledged; verify() then checks the server against it.

An operation is *acknowledged* when its success response arrived, *answered* when a failure
response arrived (nothing was done), and *unanswered* when the connection broke first (it may or
may not have been done). Only acknowledged facts are checked strictly: an acknowledged object must
read back with its material, an acknowledged Destroy must have left it destroyed; an object whose
Destroy went unanswered may be either, but never anything else.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

DESTROYED = (enums.State.DESTROYED, enums.State.DESTROYED_COMPROMISED)
# register, create (then read back), read, destroy
DEFAULT_MIX = {"register": 4, "create": 3, "get": 4, "destroy": 2}


@dataclass
class Ledger:
    live: dict[str, bytes | None] = field(default_factory=dict)  # uid -> material (None: not yet read)
    destroyed: set[str] = field(default_factory=set)
    uncertain: dict[str, bytes | None] = field(default_factory=dict)  # Destroy sent, no answer
    acked: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)  # "op: message" -> count
    unanswered: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)  # a read that returned other material: never ok
    slowest_failure: float = 0.0  # seconds from sending to a failure answer (how fast faults fail)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note_failure(self, op: str, exc: Exception, seconds: float = 0.0) -> None:
        with self.lock:
            if isinstance(exc, KmipOperationFailure):
                self.answered[f"{op}: {exc.message}"[:160]] += 1
                self.slowest_failure = max(self.slowest_failure, seconds)
            else:
                self.unanswered[op] += 1


@dataclass
class Verdict:
    checked: int = 0
    intact: int = 0
    destroyed_ok: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged, but unreadable or other material
    resurrected: list[str] = field(default_factory=list)  # Destroy acknowledged, yet readable

    @property
    def ok(self) -> bool:
        return not self.lost and not self.resurrected


def open_client(conf: Path, section: str = "admin") -> ProxyKmipClient:
    c = ProxyKmipClient(config=section, config_file=str(conf))
    c.open()
    return c


def _close(c: ProxyKmipClient | None) -> None:
    if c is not None:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - the connection is already gone
            pass


def client_loop(conf: Path, ledger: Ledger, stop: threading.Event, seed: int,
                mix: dict[str, int] = DEFAULT_MIX, reconnect: bool = False) -> None:
    """One client until ``stop``; without ``reconnect`` it ends at the first broken connection
    (the crash loop: the server is gone), with it, it reconnects and carries on (the soak)."""
    rng = random.Random(seed)
    mine: list[str] = []  # this client's live objects; only it destroys them
    ops, weights = list(mix), list(mix.values())
    c: ProxyKmipClient | None = None
    while not stop.is_set():
        if c is None:
            try:
                c = open_client(conf)
            except Exception:  # noqa: BLE001 - the server is down or restarting
                if not reconnect:
                    return
                time.sleep(0.2)
                continue
        op = rng.choices(ops, weights)[0]
        if op in ("get", "destroy") and not mine:
            op = "register"
        broke = _one(c, op, ledger, mine, rng)
        if broke:
            _close(c)
            c = None
            if not reconnect:
                return
    _close(c)


def _one(c: ProxyKmipClient, op: str, ledger: Ledger, mine: list[str], rng: random.Random) -> bool:
    """Runs one operation; True if the connection broke."""
    uid: str | None = None
    started = time.monotonic()
    try:
        if op == "register":
            material = os.urandom(32)
            uid = c.register(objects.SecretData(material, enums.SecretDataType.PASSWORD))
            with ledger.lock:
                ledger.live[uid] = material
                ledger.acked[op] += 1
            mine.append(uid)
        elif op == "create":
            uid = c.create(enums.CryptographicAlgorithm.AES, 256)
            with ledger.lock:
                ledger.live[uid] = None
                ledger.acked[op] += 1
            mine.append(uid)
            value = c.get(uid).value
            with ledger.lock:
                ledger.live[uid] = value
                ledger.acked["get"] += 1
        elif op == "get":
            uid = rng.choice(mine)
            value = c.get(uid).value
            with ledger.lock:
                expected = ledger.live.get(uid)
                if expected is not None and value != expected:
                    ledger.wrong.append(uid)
                ledger.acked[op] += 1
        else:  # destroy
            uid = mine.pop(rng.randrange(len(mine)))
            try:
                c.destroy(uid)
            except KmipOperationFailure:
                mine.append(uid)  # answered: not destroyed
                raise
            except Exception:
                with ledger.lock:
                    ledger.uncertain[uid] = ledger.live.pop(uid, None)
                raise
            with ledger.lock:
                ledger.live.pop(uid, None)
                ledger.destroyed.add(uid)
                ledger.acked[op] += 1
        return False
    except KmipOperationFailure as exc:
        ledger.note_failure(op, exc, time.monotonic() - started)
        return False
    except Exception as exc:  # noqa: BLE001 - the connection broke: outcome unknown
        ledger.note_failure(op, exc)
        return True


def verify(conf: Path, ledger: Ledger) -> Verdict:
    """Reads every object the ledger knows back from the server and settles the uncertain ones."""
    verdict = Verdict()
    c = open_client(conf)
    try:
        for uid, expected in list(ledger.live.items()):
            verdict.checked += 1
            try:
                value = c.get(uid).value
            except KmipOperationFailure as exc:
                verdict.lost.append(f"{uid}: {exc.message}")
                continue
            if expected is None:
                ledger.live[uid] = value  # created, never read before the crash: remember it now
            elif value != expected:
                verdict.lost.append(f"{uid}: other material than acknowledged")
                continue
            verdict.intact += 1
        for uid in sorted(ledger.destroyed):
            verdict.checked += 1
            if _state(c, uid) in DESTROYED:
                verdict.destroyed_ok += 1
            else:
                verdict.resurrected.append(uid)
        for uid, expected in list(ledger.uncertain.items()):
            verdict.checked += 1
            state = _state(c, uid)
            if state in DESTROYED:
                ledger.destroyed.add(uid)
                verdict.destroyed_ok += 1
            else:
                value = c.get(uid).value
                if expected is not None and value != expected:
                    verdict.lost.append(f"{uid}: other material than acknowledged")
                    continue
                ledger.live[uid] = value
                verdict.intact += 1
            del ledger.uncertain[uid]
    finally:
        _close(c)
    return verdict


def _state(c: ProxyKmipClient, uid: str) -> enums.State | None:
    try:
        _, attrs = c.get_attributes(uid, ["State"])
    except KmipOperationFailure:
        return None
    for a in attrs:
        return a.attribute_value.value  # type: ignore[no-any-return]
    return None
