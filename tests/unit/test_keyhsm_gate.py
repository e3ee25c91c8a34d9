"""The gate that keeps threads out of the PKCS#11 module while it is restarted (keyhsm/library.py)."""

from __future__ import annotations

import threading

from kmip_bridge.keyhsm.library import Gate


def test_exclusive_waits_for_every_reader_and_holds_new_ones_off() -> None:
    gate = Gate()
    events: list[str] = []
    reader_in, release_reader, writer_in = threading.Event(), threading.Event(), threading.Event()

    def reader() -> None:
        with gate.shared():
            events.append("reader in")
            reader_in.set()
            release_reader.wait(10)
            events.append("reader out")

    def writer() -> None:
        with gate.exclusive() as alone:
            assert alone
            events.append("writer in")
            writer_in.set()

    r = threading.Thread(target=reader)
    r.start()
    reader_in.wait(10)
    w = threading.Thread(target=writer)
    w.start()
    assert not writer_in.wait(0.2)  # blocked while the reader is inside
    release_reader.set()
    r.join(10)
    w.join(10)
    assert events == ["reader in", "reader out", "writer in"]


def test_a_thread_inside_may_nest_but_never_takes_the_gate_exclusively() -> None:
    gate = Gate()
    with gate.shared():
        with gate.shared():
            assert gate.held()
        with gate.exclusive() as alone:
            assert alone is False  # would deadlock on itself: refused instead
    assert not gate.held()
    with gate.exclusive() as alone:
        assert alone is True
