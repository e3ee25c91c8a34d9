"""The worker's bookkeeping of connections before and after their TLS handshake."""

from __future__ import annotations

from kmip_bridge.server.worker import HandshakeGate, Slots


def test_handshake_gate_bounds_each_address_and_the_total() -> None:
    gate = HandshakeGate(total=3, per_ip=2)
    assert gate.enter("10.0.0.1") is None and gate.enter("10.0.0.1") is None
    assert gate.enter("10.0.0.1") == "handshake limit per address reached; refusing"
    assert gate.enter("10.0.0.2") is None  # another address still gets in
    assert not gate.has_room()
    assert gate.enter("10.0.0.3") == "handshake limit reached; refusing"
    gate.leave("10.0.0.1")
    assert gate.has_room() and gate.enter("10.0.0.1") is None  # a finished handshake frees its slot
    for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        gate.leave(ip)
    assert gate.has_room() and gate.enter("10.0.0.3") is None


def test_connection_slots() -> None:
    slots = Slots(2)
    assert slots.try_acquire() and slots.try_acquire()
    assert not slots.try_acquire() and slots.free() == 0
    slots.release()
    assert slots.free() == 1 and slots.try_acquire()
