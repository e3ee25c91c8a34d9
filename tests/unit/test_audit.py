"""The hash-chained audit file: chaining, tamper detection with the right line, appends from several
processes and threads, the per-process hash cache, and its configuration."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from kmip_bridge import audit
from kmip_bridge.audit import GENESIS, Anchor, AuditLog, record_hash, verify
from kmip_bridge.config import ConfigError, config_warnings, load

REPO = Path(__file__).resolve().parents[2]


def _fields(i: int) -> dict[str, object]:
    return {
        "identity": f"client-{i % 3}",
        "groups": ["admin"] if i % 2 else [],
        "peer": f"127.0.0.1:{40000 + i}",
        "operation": "GET",
        "object": f"uid-{i}",
        "status": "SUCCESS",
        "reason": None,
    }


def _write(path: Path, n: int) -> list[bytes]:
    log = AuditLog(path)
    try:
        for i in range(n):
            log.write(_fields(i))
    finally:
        log.close()
    return path.read_bytes().splitlines(keepends=True)


def test_records_chain_from_genesis_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    records = [json.loads(line) for line in lines]
    assert records[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    for r in records:
        assert record_hash(r) == r["hash"]
        assert set(r) == {*_fields(0), "ts", "seq", "prev", "hash"}
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]  # the line number
    verdict = verify(path)
    assert verdict.intact and verdict.records == 5 and verdict.head == records[-1]["hash"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 2**70, 1.5, 1e-300, float("inf"), "", "é\u2028\n\"\\</", "\U0001f511",
    ["a", 1, None, [2.5, {"z": 1, "a": [False]}]], {"b": {"d": 1, "c": 2}, "a": []},
])
def test_canonical_bytes_are_the_standard_encoders(value: object) -> None:
    """canonical() calls the C encoder directly: the bytes must be json's own, or old records
    would no longer verify."""
    record = {"z": value, "a": 1, "m": [value], "hash": "h"}
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert audit.canonical(record) == expected


def test_an_empty_log_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.touch()
    assert verify(path).intact and verify(path).head == GENESIS


def _tampered(path: Path, lines: list[bytes]) -> audit.Verdict:
    path.write_bytes(b"".join(lines))
    return verify(path)


def test_edit_delete_swap_are_caught_at_the_right_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 6)

    edited = list(lines)
    edited[2] = edited[2].replace(b'"status":"SUCCESS"', b'"status":"OPERATION_FAILED"')
    v = _tampered(path, edited)
    assert (v.broken_line, v.records) == (3, 2) and "altered" in v.reason

    v = _tampered(path, lines[:2] + lines[3:])  # line 3 deleted
    assert v.broken_line == 3 and "deleted" in v.reason

    v = _tampered(path, [*lines[:2], lines[3], lines[2], *lines[4:]])  # lines 3 and 4 swapped
    assert v.broken_line == 3 and "chain broken" in v.reason

    v = _tampered(path, lines[1:])  # the first record removed
    assert v.broken_line == 1 and "genesis" in v.reason

    v = _tampered(path, [*lines[:5], lines[5][:-10]])  # torn last record
    assert v.broken_line == 6 and "incomplete" in v.reason

    v = _tampered(path, [*lines[:3], b"not json\n", *lines[3:]])
    assert v.broken_line == 4 and "JSON" in v.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 4)
    record = json.loads(lines[1])
    record["identity"] = "someone-else"
    record["hash"] = record_hash(record)
    forged = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    v = _tampered(path, [lines[0], forged, *lines[2:]])
    assert v.broken_line == 3 and "prev does not match the hash of line 2" in v.reason


def test_writers_in_one_process_resync_through_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    a, b = AuditLog(path), AuditLog(path)  # as two worker processes would
    resyncs = []
    for log in (a, b):
        original = log._resync

        def counting(size: int, original=original) -> int:  # type: ignore[no-untyped-def]
            resyncs.append(size)
            return original(size)

        log._resync = counting  # type: ignore[method-assign]
    for i in range(10):
        a.write(_fields(i))
    for i in range(3):
        (a if i % 2 else b).write(_fields(i))
    a.close()
    b.close()
    assert verify(path).intact and verify(path).records == 13
    # a read the tail once at its first write, then only after b had written; b likewise.
    assert len(resyncs) == 4


_WRITER = """
import json, sys, threading
from pathlib import Path
from kmip_bridge.audit import Anchor, AuditLog
path, n_threads, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
log = AuditLog(path, Anchor(path.with_name("audit.key"), path.with_name("cps"), 7))
got = {}
def run(t):
    got[t] = [log.write({"identity": "p", "pid": sys.argv[4], "thread": t, "i": i, "pad": "x" * (i % 50)})
              for i in range(n)]
threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
for t in threads: t.start()
for t in threads: t.join()
log.close()
print(json.dumps(got))
"""


def test_many_processes_and_threads_append_one_intact_chain(tmp_path: Path) -> None:
    """Batches of several processes interleave into one chain: seq is the line number, every
    caller got the hash of its own record, each record is in the file exactly once, a thread's
    records are in its order, and the checkpoints (due mid-batch, every 7) anchor all of it."""
    path = tmp_path / "audit.jsonl"
    AuditLog(path, Anchor(tmp_path / "audit.key", tmp_path / "cps", 7)).close()  # the key, made once
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "6", "150", str(k)], env=env,
                              stdout=subprocess.PIPE) for k in range(3)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:  # hung (a lost wake-up): do not leave it behind
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs)
    verdict = verify(path, audit.load_key(tmp_path / "audit.key"), tmp_path / "cps")
    assert verdict.intact, (verdict.broken_line, verdict.reason, verdict.anchor_problem)
    assert verdict.records == verdict.checkpoint == 3 * 6 * 150
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    where = {r["hash"]: n for n, r in enumerate(records)}
    assert len(where) == len(records)
    for k, out in enumerate(outputs):
        for t, hashes in json.loads(out).items():
            positions = [where[h] for h in hashes]  # KeyError: a returned hash not in the file
            assert positions == sorted(positions)
            assert [(records[n]["pid"], records[n]["thread"], records[n]["i"]) for n in positions] == [
                (str(k), int(t), i) for i in range(150)]
    cps = [json.loads(line) for line in (tmp_path / "cps").read_bytes().splitlines()]
    seqs = [c["seq"] for c in cps]  # every 7 records, plus one at each close
    assert seqs == sorted(seqs) and set(range(7, len(records) + 1, 7)) <= set(seqs)
    assert all(c["head"] == records[c["seq"] - 1]["hash"] for c in cps if c["seq"])


def test_threads_of_one_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    threads = [threading.Thread(target=lambda: [log.write(_fields(i)) for i in range(200)]) for _ in range(8)]
    for t in threads:
        t.start()
    _join(threads)
    log.close()
    assert verify(path).records == 1600 and verify(path).intact


def test_a_torn_tail_is_reported_and_writing_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 3)
    path.write_bytes(b"".join(lines) + b'{"identity":"half a rec')  # a crash mid-append
    log = AuditLog(path)
    log.write(_fields(9))
    log.close()
    v = verify(path)
    assert v.broken_line == 4 and v.records == 3
    assert json.loads(path.read_bytes().splitlines()[-1])["object"] == "uid-9"


def test_text_is_escaped_so_a_record_stays_one_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.write({"identity": 'evil\n{"forged": true}\u2028é', "peer": "x"})
    log.close()
    assert len(path.read_bytes().splitlines()) == 1
    assert verify(path).intact


def test_long_records_are_found_from_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    a, b = AuditLog(path), AuditLog(path)
    a.write({"identity": "x" * 20000})  # longer than one tail read
    b.write({"identity": "y"})
    a.write({"identity": "x" * 9000})
    b.write({"identity": "y"})
    a.close()
    b.close()
    assert verify(path).intact and verify(path).records == 4


# -- batching: records queued while a leader waits for the lock share its write --------------------


class _Held:
    """Another process's ``flock`` on the log (a separate open file), held until released."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _queue_behind_lock(log: AuditLog, fields: list[dict[str, object]]) -> tuple[list[threading.Thread], dict]:
    """Starts one writer thread per record, in order; the first leads and waits for the flock,
    the others queue behind it (each started only once the one before is queued)."""
    results: dict[int, object] = {}

    def run(n: int) -> None:
        try:
            results[n] = log.write(fields[n])
        except Exception as exc:  # noqa: BLE001 - the test looks at each caller's outcome
            results[n] = exc

    threads = []
    for n in range(len(fields)):
        threads.append(threading.Thread(target=run, args=(n,)))
        threads[-1].start()
        _until(lambda n=n: log._lock.locked() and len(log._queue) == n)
    return threads, results


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive(), "a writer never returned (a lost wake-up or hand-over)"


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_records_queued_during_a_lock_wait_share_one_write_and_checkpoints_are_their_own(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    anchor = Anchor(tmp_path / "audit.key", tmp_path / "cps", 3)
    log = AuditLog(path, anchor)
    batches: list[int] = []
    chain = log._chain
    log._chain = lambda batch, size: batches.append(len(batch)) or chain(batch, size)  # type: ignore[method-assign]
    held = _Held(path)
    threads, results = _queue_behind_lock(log, [_fields(i) for i in range(8)])
    held.release()
    _join(threads)
    assert batches == [8]  # one flock, one read-back, one write for all eight
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [results[n] for n in range(8)] == [r["hash"] for r in records]  # each caller its own, in order
    assert [r["object"] for r in records] == [f"uid-{i}" for i in range(8)]
    assert log.records == 8 and not log._leading and not log._queue
    log.write(_fields(8))  # a lone writer afterwards: a batch of one, on its own thread
    assert batches == [8, 1]
    log.close()
    cps = [json.loads(line) for line in anchor.checkpoints.read_bytes().splitlines()]
    assert [(c["seq"], c["head"]) for c in cps[1:3]] == [(3, records[2]["hash"]), (6, records[5]["hash"])]
    verdict = _verify(path, anchor)
    assert verdict.intact and verdict.records == verdict.checkpoint == 9


def test_a_record_that_is_not_json_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    held = _Held(path)
    threads, results = _queue_behind_lock(log, [_fields(0), {"identity": object()}, _fields(2)])
    held.release()
    _join(threads)
    log.close()
    assert isinstance(results[1], TypeError)
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["hash"] for r in records] == [results[0], results[2]] and [r["seq"] for r in records] == [1, 2]
    assert verify(path).intact


class _DiskFull:
    """The ``os`` module as the audit log sees it, with room for ``room`` more bytes of writes."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, bytes(data[: self.room]))
        self.room -= n
        return n


def test_a_short_write_fails_only_the_records_it_did_not_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    path = tmp_path / "audit.jsonl"
    _write(tmp_path / "scratch.jsonl", 1)
    line = len((tmp_path / "scratch.jsonl").read_bytes())  # the records below are all this long
    log = AuditLog(path)
    monkeypatch.setattr(audit, "os", _DiskFull(2 * line + 10))  # two records and a bit of the third
    held = _Held(path)
    threads, results = _queue_behind_lock(log, [_fields(i) for i in range(5)])
    held.release()
    _join(threads)
    records = [json.loads(x) for x in path.read_bytes().splitlines(keepends=True)]
    assert path.read_bytes().endswith(b"\n") and len(records) == 2  # the partial third is cut off
    assert [results[0], results[1]] == [r["hash"] for r in records]
    for n in (2, 3, 4):
        assert isinstance(results[n], audit.AuditError) and "No space left" in str(results[n])
    monkeypatch.setattr(audit, "os", os)  # space again: the next append carries on
    digest = log.write(_fields(5))
    log.close()
    last = json.loads(path.read_bytes().splitlines()[-1])
    assert (last["hash"], last["seq"], last["prev"]) == (digest, 3, records[1]["hash"])
    assert verify(path).intact and verify(path).records == 3


_FILE_LIMIT = """
import json, resource, signal, sys, threading
from pathlib import Path
from kmip_bridge.audit import Anchor, AuditError, AuditLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
path = Path(sys.argv[1])
log = AuditLog(path, Anchor(path.with_name("audit.key"), path.with_name("cps"), 5))
ok, failed = [log.write({"identity": "before", "i": i}) for i in range(20)], []
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 1500, hard))  # a few records' room
def run(t):
    for i in range(10):
        try:
            ok.append(log.write({"identity": "full", "thread": t, "i": i, "pad": "y" * (t * 7)}))
        except AuditError as exc:
            failed.append(str(exc))
threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
for t in threads: t.start()
for t in threads: t.join()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
ok += [log.write({"identity": "after", "i": i}) for i in range(5)]
log.close()
print(json.dumps({"ok": ok, "failed": failed}))
"""


def test_a_full_disk_fails_its_own_callers_and_the_log_stays_intact(tmp_path: Path) -> None:
    """The file size limit (RLIMIT_FSIZE) as a disk that fills up while eight threads append."""
    path = tmp_path / "audit.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _FILE_LIMIT, str(path)], env=env, capture_output=True,
                         timeout=60, check=True).stdout
    result = json.loads(out)
    assert result["failed"] and all("File too large" in e for e in result["failed"])
    assert len(result["ok"]) + len(result["failed"]) == 20 + 80 + 5
    verdict = verify(path, audit.load_key(tmp_path / "audit.key"), tmp_path / "cps")
    assert verdict.intact, (verdict.broken_line, verdict.reason, verdict.anchor_problem)
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert sorted(r["hash"] for r in records) == sorted(result["ok"])  # each returned hash once, no other
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[-1]["identity"] == "after" and verdict.checkpoint == len(records)


def test_a_torn_line_from_another_process_is_closed_and_chained_by_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.write(_fields(i))
    torn = b'{"identity":"crashed mid-app'
    with path.open("ab") as f:  # another worker died in the middle of its write
        f.write(torn)
    held = _Held(path)
    threads, results = _queue_behind_lock(log, [_fields(i) for i in range(10, 16)])
    held.release()
    _join(threads)
    log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines[3] == torn + b"\n"
    v = verify(path)
    assert (v.broken_line, v.records) == (4, 3)  # still reported, at its line
    after = [json.loads(line) for line in lines[4:]]
    assert [r["hash"] for r in after] == [results[n] for n in range(6)]
    prev = hashlib.sha256(torn).hexdigest()  # the torn line's raw bytes, as before batching
    for seq, r in enumerate(after, start=5):
        assert (r["prev"], r["seq"], record_hash(r)) == (prev, seq, r["hash"])
        prev = r["hash"]


# -- configuration and CLI ---------------------------------------------------------------------------


def _config(tmp_path: Path, **sections: object) -> Path:
    raw = {
        "tls": {"ca": "ca.pem", "cert": "s.pem", "key": "s.key"},
        "keyhsm": {"pin_file": "pin"},
        "database": {"url": "sqlite:///x.db"},
        **sections,
    }
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_audit_and_socket_defaults_live_in_the_instance(tmp_path: Path) -> None:
    s = load(_config(tmp_path))
    assert s.audit.enabled and s.audit.path == tmp_path / "audit.jsonl"
    assert s.keyhsm.mode == "inprocess" and s.keyhsm.socket == tmp_path / "keyhsm.sock"
    assert s.audit.key_file == tmp_path / "audit.key"
    assert s.audit.checkpoint_path == tmp_path / "audit.jsonl.checkpoints" and s.audit.checkpoint_every == 100
    s = load(_config(tmp_path, audit={"path": "logs/a.jsonl", "enabled": False}))
    assert not s.audit.enabled and s.audit.path == tmp_path / "logs" / "a.jsonl"
    assert s.audit.checkpoint_path == tmp_path / "logs" / "a.jsonl.checkpoints"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"audit": {"enabled": "yes"}}, "audit.enabled: must be true or false"),
        ({"audit": {"file": "x"}}, "audit.file: unknown key"),
        ({"audit": {"checkpoint_every": 0}}, "audit.checkpoint_every: must be at least 1"),
        ({"keyhsm": {"pin_file": "pin", "mode": "remote"}}, "keyhsm.mode: must be one of inprocess, socket"),
        ({"keyhsm": {"pin_file": "pin", "socket": "/" + "s" * 120}}, "keyhsm.socket: path too long"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, sections: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_config(tmp_path, **sections))


def test_a_pin_in_the_yaml_draws_a_warning_without_the_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMIP_BRIDGE_TOKEN_PIN", raising=False)
    (tmp_path / "pin").write_text("0123\n")
    os.chmod(tmp_path / "pin", 0o600)
    assert config_warnings(load(_config(tmp_path))) == []
    s = load(_config(tmp_path, keyhsm={"pin": "s3cr3t-pin-777"}))
    (warning,) = config_warnings(s)
    assert "keyhsm.pin" in warning and "s3cr3t-pin-777" not in warning
    os.chmod(tmp_path / "pin", 0o644)
    (warning,) = config_warnings(load(_config(tmp_path)))
    assert "readable by others" in warning and "0123" not in warning


def test_cli_audit_verify(tmp_path: Path) -> None:
    from kmip_bridge.cli import main

    config = _config(tmp_path)
    lines = _write(tmp_path / "audit.jsonl", 4)
    assert main(["audit", "verify", "--config", str(config)]) == 0
    (tmp_path / "cut.jsonl").write_bytes(lines[0] + lines[2] + lines[3])
    assert main(["audit", "verify", "--config", str(config), "--file", str(tmp_path / "cut.jsonl")]) == 1
    assert main(["audit", "verify", "--config", str(config), "--file", str(tmp_path / "none")]) == 1


# -- what dispatch records ----------------------------------------------------------------------------


def test_batch_items_and_refusals_become_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kmip.core.enums import Operation, ResultReason, ResultStatus
    from kmip.core.enums import Tags as T

    from kmip_bridge.operations import auditing
    from kmip_bridge.operations.context import RequestContext, Services
    from kmip_bridge.policy import Identity
    from kmip_bridge.protocol import ttlv
    from kmip_bridge.protocol.messages import BatchItem, Result

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    services = Services(keyhsm=None, store=None, policy=None, audit=log)  # type: ignore[arg-type]
    ctx = RequestContext(services, Identity("alice", frozenset({"ops", "admin"})), "10.0.0.1:5000")
    secret = b"material-that-must-not-appear"
    register = BatchItem(Operation.REGISTER.value, None, ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.Item(T.KEY_MATERIAL.value, ttlv.Type.BYTE_STRING, secret)]))
    answer = ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "uid-1")])
    with caplog.at_level("DEBUG", logger="kmip_bridge.audit"):
        auditing.record(ctx, register, Result(register.operation, None, payload=answer))
        ctx.id_placeholder = "uid-1"
        get = BatchItem(Operation.GET.value, None, None)  # by the ID placeholder
        failed = Result(get.operation, None, status=ResultStatus.OPERATION_FAILED.value,
                        reason=ResultReason.PERMISSION_DENIED.value, message="no")
        auditing.record(ctx, get, failed)
        auditing.record(ctx, BatchItem(Operation.LOCATE.value, None, None), Result(Operation.LOCATE.value, None,
                        payload=ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "uid-1")])))
        auditing.refused(services, "mallory", "10.0.0.9:1", "identity 'mallory' is disabled")
    log.close()
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [(r["operation"], r["object"], r["status"], r["reason"]) for r in records] == [
        ("REGISTER", "uid-1", "SUCCESS", None),
        ("GET", "uid-1", "OPERATION_FAILED", "PERMISSION_DENIED"),
        ("LOCATE", None, "SUCCESS", None),
        ("-", None, "OPERATION_FAILED", "PERMISSION_DENIED"),
    ]
    assert records[0]["groups"] == ["admin", "ops"] and records[0]["peer"] == "10.0.0.1:5000"
    assert records[3]["identity"] == "mallory" and "disabled" in records[3]["detail"]
    assert secret not in path.read_bytes() and secret.hex().encode() not in path.read_bytes()
    assert verify(path).intact
    # With the audit file on, the per-item log line is DEBUG; refusals are logged by the caller.
    lines = [r for r in caplog.records if r.getMessage() == "request"]
    assert len(lines) == 3 and all(r.levelname == "DEBUG" for r in lines)
    caplog.clear()
    with caplog.at_level("INFO", logger="kmip_bridge.audit"):
        auditing.record(RequestContext(Services(None, None, None), ctx.identity, "p"), get, failed)  # type: ignore[arg-type]
    assert [r.levelname for r in caplog.records] == ["INFO"]


# -- anchoring: signed checkpoints ---------------------------------------------------------------------


def _anchored(tmp_path: Path, n: int, every: int = 10) -> tuple[Path, Anchor, list[bytes]]:
    path = tmp_path / "audit.jsonl"
    anchor = Anchor(tmp_path / "audit.key", tmp_path / "audit.jsonl.checkpoints", every)
    log = AuditLog(path, anchor)
    try:
        for i in range(n):
            log.write(_fields(i))
    finally:
        log.close()
    return path, anchor, path.read_bytes().splitlines(keepends=True)


def _verify(path: Path, anchor: Anchor) -> audit.Verdict:
    return verify(path, audit.load_key(anchor.key_file), anchor.checkpoints)


def test_checkpoints_are_signed_and_verified(tmp_path: Path) -> None:
    path, anchor, _ = _anchored(tmp_path, 25)
    cps = [json.loads(line) for line in anchor.checkpoints.read_bytes().splitlines()]
    # the empty log when the key was made, every 10 records, and the head when the log closed
    assert [c["seq"] for c in cps] == [0, 10, 20, 25]
    assert cps[0]["head"] == GENESIS and cps[0]["prev"] == "genesis"
    assert all(b["prev"] == a["mac"] for a, b in itertools.pairwise(cps))
    for f in (anchor.key_file, anchor.checkpoints):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    verdict = _verify(path, anchor)
    assert verdict.intact and verdict.records == 25 and verdict.checkpoint == 25
    assert verdict.head == cps[-1]["head"]
    # Reopening keeps the key and the checkpoint chain.
    AuditLog(path, anchor).close()
    assert _verify(path, anchor).intact


def test_a_cut_tail_is_caught(tmp_path: Path) -> None:
    path, anchor, lines = _anchored(tmp_path, 25)
    path.write_bytes(b"".join(lines[:22]))
    assert verify(path).intact  # the chain alone cannot tell: that was the hole
    verdict = _verify(path, anchor)
    assert not verdict.intact and verdict.broken_line == 23
    assert "signed checkpoint covers 25" in verdict.reason and "removed from the end" in verdict.reason


def test_an_emptied_log_is_caught(tmp_path: Path) -> None:
    path, anchor, _ = _anchored(tmp_path, 12)
    path.write_bytes(b"")
    assert verify(path).intact
    verdict = _verify(path, anchor)
    assert not verdict.intact and "emptied" in verdict.reason


def _recompute(lines: list[bytes], at: int, change: dict[str, object]) -> list[bytes]:
    """An attacker's edit of record ``at`` (0-based) with every hash after it recomputed."""
    records = [json.loads(line) for line in lines]
    records[at].update(change)
    prev = records[at - 1]["hash"] if at else GENESIS
    for r in records[at:]:
        r["prev"] = prev
        r["hash"] = prev = record_hash(r)
    return [audit.canonical(r) + b"\n" for r in records]


def test_a_recomputed_chain_is_caught(tmp_path: Path) -> None:
    path, anchor, lines = _anchored(tmp_path, 25)
    path.write_bytes(b"".join(_recompute(lines, 4, {"identity": "mallory"})))
    assert verify(path).intact  # a consistent chain: only the key tells
    verdict = _verify(path, anchor)
    assert not verdict.intact and verdict.broken_line == 10 and "recomputed" in verdict.reason


def test_forged_or_removed_checkpoints_are_caught(tmp_path: Path) -> None:
    path, anchor, lines = _anchored(tmp_path, 25)
    good = anchor.checkpoints.read_bytes()
    # Checkpoints made with another key, for a recomputed chain.
    path.write_bytes(b"".join(_recompute(lines, 4, {"identity": "mallory"})))
    forged = [json.loads(line) for line in good.splitlines()]
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    for c in forged:
        c["head"] = records[c["seq"] - 1]["hash"] if c["seq"] else GENESIS
        c["mac"] = audit.checkpoint_mac(b"k" * 32, c)
    anchor.checkpoints.write_bytes(b"".join(audit.canonical(c) + b"\n" for c in forged))
    assert "MAC does not match" in _verify(path, anchor).anchor_problem
    # The checkpoint file removed, or its first checkpoints cut.
    path.write_bytes(b"".join(lines))
    anchor.checkpoints.unlink()
    assert "no signed checkpoint" in _verify(path, anchor).anchor_problem
    anchor.checkpoints.write_bytes(b"".join(good.splitlines(keepends=True)[2:]))
    assert "does not follow" in _verify(path, anchor).anchor_problem
    anchor.checkpoints.write_bytes(good)
    assert _verify(path, anchor).intact  # control: the real file


def test_a_log_written_before_checkpoints_is_anchored_from_now(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)  # no anchor: the key does not exist yet
    lines = path.read_bytes().splitlines(keepends=True)
    legacy = [json.loads(line) for line in lines]
    for r in legacy:  # records of an older version, without seq
        del r["seq"]
        r["hash"] = record_hash(r)
    prev = GENESIS
    for r in legacy:
        r["prev"] = prev
        r["hash"] = prev = record_hash(r)
    path.write_bytes(b"".join(audit.canonical(r) + b"\n" for r in legacy))
    anchor = Anchor(tmp_path / "audit.key", tmp_path / "cps", 10)
    log = AuditLog(path, anchor)  # makes the key and signs the existing head (3 records)
    log.write(_fields(9))
    log.close()
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert records[-1]["seq"] == 4
    verdict = _verify(path, anchor)
    assert verdict.intact and verdict.records == 4 and verdict.checkpoint == 4


def test_cli_audit_verify_reports_truncation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kmip_bridge.cli import main

    config = _config(tmp_path, audit={"checkpoint_every": 5})
    s = load(config)
    assert s.audit.key_file is not None and s.audit.checkpoint_path is not None
    log = AuditLog(s.audit.path, Anchor(s.audit.key_file, s.audit.checkpoint_path, 5))  # type: ignore[arg-type]
    for i in range(7):
        log.write(_fields(i))
    log.close()
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert "intact, 7 records" in capsys.readouterr().out
    lines = s.audit.path.read_bytes().splitlines(keepends=True)  # type: ignore[union-attr]
    s.audit.path.write_bytes(b"".join(lines[:4]))  # type: ignore[union-attr]
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "broken at line 5: the log ends after 4 records but a signed checkpoint covers 7" in capsys.readouterr().out
