"""The database writer process (store/writer.py) in a running server: it commits the workers'
hot writes, a crash of it costs no request (the workers commit in-process until the master has
started a new one), and it stops last, after the workers have drained."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import yaml
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

from kmip_bridge.config import load

from .conftest import Instance, Server

pytestmark = pytest.mark.e2e


def _client(server: Server) -> ProxyKmipClient:
    """Unopened: ``with`` opens and closes it."""
    return ProxyKmipClient(config="admin", config_file=str(server.client_conf()))


def test_a_killed_writer_costs_no_request_and_is_replaced(instance: Instance) -> None:
    server = instance.start()
    try:
        assert server.saw('"msg": "database writer ready"')
        first = server.writer_pids()[0]
        assert first in server.children()
        socket_path = load(server.config).database.writer_socket
        assert socket_path is not None and socket_path.exists()

        failures: list[BaseException] = []
        created: list[str] = []
        stop = threading.Event()

        def load_loop() -> None:
            try:
                with _client(server) as c:
                    while not stop.is_set():
                        uid = c.create(enums.CryptographicAlgorithm.AES, 128)
                        assert c.get(uid).value
                        created.append(uid)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=load_loop) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        os.kill(first, signal.SIGKILL)  # mid-load: writes in flight meet a dead writer
        assert server.saw("database writer died; replacing it")
        deadline = time.monotonic() + 30
        while len(server.writer_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(60)
        second = server.writer_pids()[-1]
        assert second != first and second in server.children()
        # A write the dead writer took but never confirmed fails its request with an error
        # (its outcome is unknown); anything else is a bug. At most one per client thread.
        unexpected = [f for f in failures if "database writer stopped before confirming" not in str(f)]
        assert unexpected == [] and len(failures) <= len(threads), failures
        assert len(created) > 20
        with _client(server) as c:  # every acknowledged key is there, whole
            for uid in created[:: max(1, len(created) // 25)]:
                assert len(c.get(uid).value) == 16
            fresh = c.create(enums.CryptographicAlgorithm.AES, 256)  # through the new writer
            assert len(c.get(fresh).value) == 32
    finally:
        assert server.stop() == 0
    assert not socket_path.exists()  # removed by the writer on its way out


def test_inline_writer_setting_runs_no_writer_process(instance: Instance) -> None:
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["database"]["writer"] = "inline"
    instance.config.write_text(yaml.safe_dump(cfg))
    try:
        server = instance.start()
        try:
            with _client(server) as c:
                uid = c.create(enums.CryptographicAlgorithm.AES, 128)
                assert len(c.get(uid).value) == 16
            assert server.writer_pids() == []
            assert len(server.children()) == 2  # the two workers, nothing else
        finally:
            assert server.stop() == 0
    finally:
        cfg["database"].pop("writer")
        instance.config.write_text(yaml.safe_dump(cfg))


def test_fewer_handler_threads_than_clients_serve_them_all(instance: Instance) -> None:
    """server.handler_threads: 1 per worker, 6 concurrent clients: requests queue on the loop
    and every one is answered (no deadlock between a thread waiting for the writer and the rest)."""
    server = instance.start(handler_threads=1)
    try:
        failures: list[BaseException] = []
        done: list[int] = []

        def client() -> None:
            try:
                with _client(server) as c:
                    for _ in range(8):
                        uid = c.create(enums.CryptographicAlgorithm.AES, 128)
                        assert len(c.get(uid).value) == 16
                done.append(1)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert failures == [] and len(done) == 6
    finally:
        assert server.stop() == 0
        cfg = yaml.safe_load(instance.config.read_text())
        cfg["server"].pop("handler_threads")  # the module's other tests keep the default
        instance.config.write_text(yaml.safe_dump(cfg))
