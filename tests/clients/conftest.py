"""Fixtures of the client-conversation suite: one real server (SQLite, 2 workers, real mutual TLS,
real SoftHSM2) per module, and a client certificate per well-known client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..e2e.conftest import Instance, Server, make_instance


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    return make_instance(tmp_path_factory.mktemp("clients"), None)


@pytest.fixture(scope="module")
def server(instance: Instance) -> Iterator[Server]:
    srv = instance.start()
    yield srv
    code = srv.stop()
    assert code == 0, "server did not exit cleanly on SIGTERM:\n" + "".join(srv.log[-20:])
