"""Replays every shipped OASIS KMIP test vector (v1.4 and v2.1 mandatory) against a live server,
strictly (tolerances: kmip_bridge/conformance/compare.py). A file listed in
expected_failures.txt must fail (xfail strict: if it starts passing, remove it from the list)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kmip_bridge.client import client_context
from kmip_bridge.conformance import runner
from tests.e2e.conftest import Instance, Server, make_instance

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
VECTORS = sorted((HERE / "vectors").glob("v*/*.xml"))
EXPECTED = runner.load_expected_failures(HERE / "expected_failures.txt")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Instance]]:
    instance = make_instance(tmp_path_factory.mktemp("conformance"), None)
    server = instance.start()
    yield server, instance
    assert server.stop() == 0


def _param(path: Path) -> object:
    name = path.stem
    marks = [pytest.mark.xfail(strict=True, reason=EXPECTED[name])] if name in EXPECTED else []
    return pytest.param(path, id=f"{path.parent.name}/{name}", marks=marks)


def test_expected_failures_name_shipped_vectors() -> None:
    assert set(EXPECTED) <= {p.stem for p in VECTORS}
    assert all(reason for reason in EXPECTED.values())


@pytest.mark.parametrize("vector", [_param(p) for p in VECTORS])
def test_vector(vector: Path, live: tuple[Server, Instance]) -> None:
    server, instance = live
    client = instance.dir / "clients" / "admin"
    ctx = client_context(instance.dir / "pki" / "ca.pem", client / "cert.pem", client / "key.pem")
    result = runner.run_file(vector, "127.0.0.1", server.port, ctx)
    assert result.passed, "\n".join([result.error or "", *result.differences[:12]])
