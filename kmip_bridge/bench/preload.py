"""Bulk-loading an instance with N AES-256 keys for the scale benchmark (``--scale``).

Every object is what a Create would have stored: its own random key, sealed under the
instance's KEK by the Key HSM layer (its own DEK, wrapped on the token) and inserted through
``Store.insert_object``. What makes it fast is batching, not shortcuts: thousands of objects per
transaction (``Store.unit_of_work``), and one in-process Create whose attribute rows serve as the
template for the rest (only the Name and the Digest differ per object). The template object keeps
its place in the store, so a load of N leaves N + 1 objects.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from kmip.core.enums import CryptographicAlgorithm, NameType, ObjectType, State
from kmip.core.enums import Tags as T

from .. import config
from ..app import App, open_keyhsm
from ..keyhsm import KeyHsm
from ..operations import formats
from ..operations.create import symmetric_key
from ..operations.objects import _aad_context, sealed_columns, to_row
from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..store import AttrRow, ObjectRow
from . import workloads

OWNER = "admin"  # the harness's client identity: it may Get and Locate what is loaded
BATCH = 5000  # objects per transaction


@dataclass
class LoadResult:
    loaded: int = 0
    seconds: float = 0.0
    insert_s: float = 0.0
    # a uniform sample of what was loaded, for the clients: (uid, name)
    sample: list[tuple[str, str]] = field(default_factory=list)


def name_of(index: int) -> str:
    return f"scale-{index:08d}"


def _template(app: App, client_cert: Path) -> list[AttrRow]:
    """The attribute rows of one real Create (with a Name), made in this process."""
    der = x509.load_pem_x509_certificate(client_cert.read_bytes()).public_bytes(Encoding.DER)
    session = app.open_session(der, "preload")
    resp = session.handle(workloads.create_message((1, 2), name="scale-template"))
    ok, reason = workloads.status_of(resp)
    uid = workloads.uid_of(resp)
    if not ok or uid is None:
        raise RuntimeError(f"template Create failed: {workloads.reason_name(reason)}: {workloads.message_of(resp)}")
    return app.services.store.load_attributes(uid.decode())


def _name_row(index: int, position: int) -> AttrRow:
    value = ttlv.struct_(
        T.ATTRIBUTE_VALUE,
        [ttlv.text(T.NAME_VALUE, name_of(index)), ttlv.enum(T.NAME_TYPE, NameType.UNINTERPRETED_TEXT_STRING)],
    )
    return to_row(Attribute("Name", value, position))


_sealer: KeyHsm | None = None


def _sealer_init(config_path: Path) -> None:
    """A sealing process: opens the token itself (PKCS#11 does not survive fork)."""
    global _sealer
    _sealer = open_keyhsm(config.load(config_path))


def _seal_batch(first: int, n: int) -> list[tuple[str, dict[str, object], AttrRow | None]]:
    """(uid, sealed columns, Digest row) for objects ``first`` .. ``first + n - 1``: what a Create
    of a fresh random AES-256 key stores."""
    assert _sealer is not None
    sym = ObjectType.SYMMETRIC_KEY.value
    context = _aad_context(sym)
    out = []
    for _ in range(n):
        uid = str(uuid.uuid4())
        obj = symmetric_key(CryptographicAlgorithm.AES.value, 256, secrets.token_bytes(32))
        sealed = _sealer.seal(uid, ttlv.encode(obj), context)
        digest = formats.digest(sym, obj)
        out.append((uid, sealed_columns(sealed), to_row(Attribute("Digest", digest)) if digest is not None else None))
    return out


def load(config_path: Path, client_cert: Path, count: int, first: int = 0, sample: int = 256,
         seed: int = 1, sealers: int = 2) -> LoadResult:
    """Loads objects ``first`` .. ``first + count - 1`` (names ``scale-NNNNNNNN``). ``sealers``
    processes seal batches while this one inserts the previous batch (a pipeline)."""
    out = LoadResult()
    rng = random.Random(seed)
    picks = set(rng.sample(range(first, first + count), min(sample, count)))
    sym = ObjectType.SYMMETRIC_KEY.value
    # the pool first: its processes must fork before this one opens the token
    pool = multiprocessing.get_context("fork").Pool(sealers, _sealer_init, (config_path,))
    app = None
    try:
        settings = config.load(config_path)
        # The loader opens the token itself, like its sealers, whatever keyhsm.mode the server
        # uses: the server and its Key HSM service are stopped while it loads.
        app = App(dataclasses.replace(settings, keyhsm=dataclasses.replace(settings.keyhsm, mode="inprocess")))
        template = _template(app, client_cert)
        store = app.services.store
        t_start = time.monotonic()
        created_us = time.time_ns() // 1000
        batches = [(i, min(BATCH, first + count - i)) for i in range(first, first + count, BATCH)]
        for (i, n), sealed in zip(batches, pool.imap(_star, batches), strict=True):
            t0 = time.monotonic()
            rows = []
            for k, (uid, columns, digest) in enumerate(sealed, start=i):
                attrs = []
                for a in template:
                    if a.name == "Name":
                        a = _name_row(k, a.position)
                    elif a.name == "Digest" and digest is not None:
                        a = AttrRow(a.name, digest.value, a.position, digest.search)
                    attrs.append(a)
                row = ObjectRow(uid=uid, object_type=sym, state=State.PRE_ACTIVE.value, owner=OWNER,
                                created_at=created_us + k, policy="default", **columns)  # type: ignore[arg-type]
                rows.append((row, attrs))
                if k in picks:
                    out.sample.append((uid, name_of(k)))
            store.insert_objects(rows)
            out.insert_s += time.monotonic() - t0
            out.loaded += n
            if out.loaded % 100_000 == 0 or out.loaded == count:
                rate = out.loaded / (time.monotonic() - t_start)
                print(f"preload: {out.loaded}/{count} objects, {rate:.0f}/s", file=sys.stderr)
        out.seconds = time.monotonic() - t_start
    finally:
        pool.terminate()
        pool.join()
        if app is not None:
            app.close()
    rng.shuffle(out.sample)
    return out


def _star(batch: tuple[int, int]) -> list[tuple[str, dict[str, object], AttrRow | None]]:
    return _seal_batch(*batch)
