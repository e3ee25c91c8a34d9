"""The audit trail: one hash-chained JSON line per batch item, appended by every worker process.

Each record carries ``prev`` (the ``hash`` of the record before it, or ``GENESIS`` for the first)
and its own ``hash``: SHA-256 over the canonical JSON of the record without ``hash`` (sorted keys,
no whitespace, UTF-8). Editing a record breaks its own hash; deleting, inserting or reordering
records breaks the next record's ``prev``.

Each record also carries ``seq``, its 1-based line number. The chain alone has no secret: whoever
can write the file can cut its tail, empty it, or edit a record and recompute every hash after it.
So the log is anchored (``Anchor``): every ``checkpoint_every`` records (and when a worker closes
the log) a checkpoint ``{"v":1,"seq":N,"head":HASH,"ts":...,"prev":MAC_BEFORE,"mac":...}`` is
appended to a separate file, MAC'd with HMAC-SHA256 under a secret key (a 0600 key file in the
instance); ``prev`` chains the checkpoints from ``"genesis"``. ``verify`` then also checks every
checkpoint's MAC and link and that record N of the log has hash HASH: a cut tail, an emptied file
or a recomputed chain no longer matches a signed checkpoint. The newest checkpoint is the head an
operator copies elsewhere (also the ``kmip_bridge_audit_checkpoint_records`` metric). Readers
ignore unknown fields, so records and checkpoints can grow (``v`` versions the checkpoint).

Records name who did what to which object and how it ended: never key material, never a PIN.

Several processes append to the same file. Appends take ``flock`` on the file (and a thread
lock, since flock does not exclude threads sharing one open file). The previous hash is cached per
process together with the file size after that process's last write; only when the size differs
(another process wrote meanwhile) is the last line read back.

Appends are batched per process (leader/follower, as in store/writes.py): the records that handler
threads queue while one of them (the leader) waits for the ``flock`` are chained and written
together, after it has the lock, so one ``flock``,
``fstat``, read-back and ``write`` serve up to ``MAX_BATCH`` records. A lone writer leads its own
batch of one, on its own thread, with no hand-off. Every caller still returns only once its own
record is in the file, with that record's hash, and gets its own error: a record that cannot be
serialised fails alone; a short write (disk full) fails the records it did not complete, and
their partial bytes are cut off again under the lock, so the chain stays intact and the next
append carries on from the last complete record. Checkpoints due inside a batch are written
after it, for their own record (``seq`` and ``head``), in log order.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kmip_bridge.audit")

GENESIS = hashlib.sha256(b"kmip-bridge audit log v1").hexdigest()
_TAIL_CHUNK = 4096
MAX_BATCH = 64  # records per write under one flock (bounds the lock hold and a batch's bytes)
CHECKPOINT_GENESIS, CHECKPOINT_LOST = "genesis", "lost"


class AuditError(Exception):
    """The audit record could not be written."""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # ASCII only: \uXXXX escapes
# The C encoder that JSONEncoder.encode builds on every call, built once (the same bytes, less
# per-record overhead). No circular-reference markers: a shared dict is not thread-safe, and
# records are flat.
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_ENCODE = _c_encoder(None, _CANONICAL.default, json.encoder.encode_basestring_ascii, None, ":", ",",
                     True, False, True) if _c_encoder is not None else None


def canonical(record: dict[str, Any]) -> bytes:
    if _ENCODE is None:
        return _CANONICAL.encode(record).encode()
    return "".join(_ENCODE(record, 0)).encode()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``record`` without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


_second: tuple[int, str] = (-1, "")


def _timestamp(t: float) -> str:
    """ISO 8601 UTC with microseconds; the formatted second is reused (strftime is the slow part)."""
    global _second
    micros = int(t * 1_000_000)
    sec, frac = divmod(micros, 1_000_000)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{frac:06d}Z"


_KEY_BYTES = 32


def load_key(path: Path) -> bytes | None:
    """The checkpoint key (hex in a 0600 file), or None when the file does not exist."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"cannot read the audit key {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise AuditError(f"the audit key {path} is not {_KEY_BYTES} bytes of hex")
    return key


def _create_key(path: Path) -> bytes:
    """Creates the key file atomically (several workers may race): written 0600 under a temporary
    name, then linked into place, which fails if another process was first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(_KEY_BYTES).hex() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    key = load_key(path)
    assert key is not None
    return key


def checkpoint_mac(key: bytes, checkpoint: dict[str, Any]) -> str:
    body = {k: v for k, v in checkpoint.items() if k != "mac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


class _Pending:
    """One caller's record on its way into the file."""

    __slots__ = ("digest", "error", "fields", "lead", "wake")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.digest: str | None = None
        self.error: BaseException | None = None
        self.lead = False  # this caller's thread writes the next batch
        # Released once, when the record is written (or failed) or its thread is to lead; only
        # made for a caller that has to wait, so a lone writer allocates no lock.
        self.wake: threading.Lock | None = None


@dataclass(frozen=True)
class Anchor:
    """Where signed checkpoints go, under which key, how often."""

    key_file: Path
    checkpoints: Path
    every: int = 100


class AuditLog:
    """Appends hash-chained records to ``path``. Thread- and multi-process-safe; open it after
    ``fork()`` (the composition root builds one per worker). With an ``anchor``, writes signed
    checkpoints (the key file is created on first use, with a checkpoint of the empty log)."""

    def __init__(self, path: Path, anchor: Anchor | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open the audit log {path}: {exc.strerror}") from None
        self._lock = threading.Lock()  # the file's, within this process (flock is per open file)
        self._mutex = threading.Lock()  # the queue's
        self._queue: list[_Pending] = []
        self._leading = False  # a thread is writing a batch (or about to)
        self._size = -1  # the file's size right after this process's last append; -1: unknown
        self._prev = GENESIS
        self._seq = 0  # records in the file (the last record's seq)
        self._anchor = anchor
        self._key: bytes | None = None
        self._new_key = False
        self._cp_fd = -1
        if anchor is not None:
            try:
                self._cp_fd = os.open(anchor.checkpoints, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                      0o600)
                key = load_key(anchor.key_file)
                if key is None:
                    key = _create_key(anchor.key_file)
                    self._key, self._new_key = key, True
                    self.checkpoint()  # the empty log's (or the existing log's) head, signed
                    self._new_key = False
                self._key = key
            except OSError as exc:
                raise AuditError(f"cannot set up audit checkpoints ({exc.filename}): {exc.strerror}") from None

    @property
    def records(self) -> int:
        """Records in the file as of this process's last append or checkpoint."""
        return self._seq

    def write(self, fields: dict[str, Any]) -> str:
        """Appends one record made of ``fields`` (JSON scalars and lists; not ``ts``, ``seq``,
        ``prev`` or ``hash``, which are added here); returns its hash once it is in the file.
        Raises AuditError (TypeError/ValueError for fields that are not JSON)."""
        job = _Pending(fields)
        wake = None
        mutex = self._mutex  # acquire/release, not ``with``: this is the per-record path
        mutex.acquire()
        try:
            if self._leading:
                job.wake = wake = threading.Lock()
                wake.acquire()
                self._queue.append(job)
            else:
                self._leading = True  # the queue is empty: a batch of this record and later ones
        finally:
            mutex.release()
        if wake is None:
            self._lead(job, [job])
        else:
            wake.acquire()  # until written, or asked to lead
            if job.lead:
                self._lead(job, [])  # job is the oldest queued record: the batch takes it first
        if job.error is not None:
            raise job.error
        assert job.digest is not None
        return job.digest

    def _lead(self, own: _Pending, batch: list[_Pending]) -> None:
        """Writes one batch, wakes its callers, hands the lead to the oldest record still queued."""
        try:
            self._lock.acquire()
            try:
                self._write_batch(batch)
            finally:
                self._lock.release()
        finally:
            self._hand_over(own, batch)

    def _write_batch(self, batch: list[_Pending]) -> None:
        """Under the thread lock: flock, then the queue (every record queued while this thread
        waited for the lock joins the batch), then one write."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self._take(batch)
            _fail(batch, self._lock_error(exc))
            return
        try:
            try:
                size = os.fstat(self._fd).st_size
                if size != self._size:
                    size = self._resync(size)
            except OSError as exc:
                self._size = -1
                self._take(batch)
                _fail(batch, self._append_error(exc))
                return
            if self._queue:  # (a record queued just after this look waits for the next batch)
                self._take(batch)
            first = self._seq + 1
            written = self._chain(batch, size)
            if self._anchor is not None and (first - 1) // self._anchor.every != self._seq // self._anchor.every:
                self._checkpoints(written, first)  # one or more due in this batch
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _take(self, batch: list[_Pending]) -> None:
        """Moves the oldest queued records into ``batch``, up to MAX_BATCH in all."""
        with self._mutex:
            n = MAX_BATCH - len(batch)
            batch += self._queue[:n]
            del self._queue[:n]

    def _hand_over(self, own: _Pending, batch: list[_Pending]) -> None:
        """Wakes the batch's callers and makes the oldest queued record's thread the next leader."""
        self._mutex.acquire()
        try:
            if not batch:  # interrupted before it took the queue: own is still in it
                self._queue.remove(own)
                batch.append(own)
            nxt = self._queue[0] if self._queue else None
            if nxt is None:
                self._leading = False
            else:
                nxt.lead = True
        finally:
            self._mutex.release()
        for job in batch:
            if job.digest is None and job.error is None:  # only if interrupted
                job.error = AuditError("audit write interrupted")
            if job is not own:
                _wake(job)
        if nxt is not None:
            _wake(nxt)

    def _chain(self, batch: list[_Pending], size: int) -> list[tuple[_Pending, str]]:
        """Chains and appends the batch's records after the file's ``size`` bytes; returns the
        records now in the file, in order, with their hashes. A caller's digest is set only once
        its line is in the file."""
        ts = _timestamp(time.time())  # the batch's write: one time for its records
        prev, seq = self._prev, self._seq
        lines: list[bytes] = []
        chained: list[tuple[_Pending, str]] = []
        for job in batch:
            try:
                body = canonical({**job.fields, "ts": ts, "seq": seq + 1, "prev": prev})
            except (TypeError, ValueError, RecursionError) as exc:  # this caller's fields: its own error
                job.error = exc
                continue
            prev, seq = hashlib.sha256(body).hexdigest(), seq + 1
            # The line is the record plus its hash; verification re-canonicalises without it.
            lines.append(body[:-1] + b',"hash":"' + prev.encode() + b'"}\n')
            chained.append((job, prev))
        written, error = self._write_all(b"".join(lines))
        if error is not None:
            return self._failed_write(chained, lines, size, written, error)
        for job, digest in chained:
            job.digest = digest
        self._prev, self._seq, self._size = prev, seq, size + written
        return chained

    def _failed_write(self, chained: list[tuple[_Pending, str]], lines: list[bytes], size: int, written: int,
                      error: OSError) -> list[tuple[_Pending, str]]:
        """The records complete in the file succeed; the others fail with ``error``."""
        done = self._cut_short(lines, size, written)
        failure = self._append_error(error)
        for job, digest in chained[:done]:
            job.digest = digest
        for job, _ in chained[done:]:
            job.error = failure
        if done:
            self._prev, self._seq = chained[done - 1][1], self._seq + done
        return chained[:done]

    def _cut_short(self, lines: list[bytes], size: int, written: int) -> int:
        """After a short write (disk full): how many of ``lines`` are complete in the file. Those
        stay (their callers succeed); the partial one is cut off, so that the next append chains
        from the last complete record instead of a torn line."""
        done, kept = 0, 0
        while done < len(lines) and kept + len(lines[done]) <= written:
            kept += len(lines[done])
            done += 1
        try:
            if written > kept:
                os.ftruncate(self._fd, size + kept)
            self._size = size + kept
        except OSError:
            self._size = -1  # the torn line stays: the next append reads it back and closes it
        return done

    def _checkpoints(self, written: list[tuple[_Pending, str]], first: int) -> None:
        """Under the log's lock: the checkpoints due inside the batch (``written`` are records
        ``first``, ``first + 1`` ...), each for its own record. One that cannot be written fails
        the caller of that record, as before batching."""
        assert self._anchor is not None
        for seq, (job, digest) in enumerate(written, start=first):
            if seq % self._anchor.every == 0:
                try:
                    self._write_checkpoint(seq, digest)
                except OSError as exc:
                    job.digest, job.error = None, AuditError(f"cannot write an audit checkpoint: {exc.strerror}")

    def _append_error(self, exc: OSError) -> AuditError:
        return AuditError(f"cannot append to the audit log {self.path}: {exc.strerror}")

    def checkpoint(self) -> None:
        """Signs the log's current head (count and hash) into the checkpoint file, now."""
        if self._anchor is None or self._key is None:
            return
        with self._lock:
            self._lock_file()
            try:
                size = os.fstat(self._fd).st_size
                if size != self._size:
                    self._size = self._resync(size)
                self._write_checkpoint(self._seq, self._prev)
            except OSError as exc:
                raise AuditError(f"cannot write an audit checkpoint: {exc.strerror}") from None
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _lock_file(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise self._lock_error(exc) from None

    def _lock_error(self, exc: OSError) -> AuditError:
        return AuditError(f"cannot lock the audit log {self.path}: {exc.strerror}")

    def _write_checkpoint(self, seq: int, head: str) -> None:
        """Signs record ``seq`` (hash ``head``). Under the log's lock, so checkpoints are in log order."""
        assert self._key is not None
        cp: dict[str, Any] = {"v": 1, "seq": seq, "head": head, "ts": _timestamp(time.time()),
                              "prev": self._last_checkpoint_mac()}
        cp["mac"] = checkpoint_mac(self._key, cp)
        data = canonical(cp) + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self._cp_fd, view):]
        from . import metrics  # the head count, for an operator to compare elsewhere

        metrics.audit_head(seq)

    def _append(self, data: bytes) -> None:
        error = self._write_all(data)[1]
        if error is not None:
            raise error

    def _write_all(self, data: bytes) -> tuple[int, OSError | None]:
        """Writes ``data`` to the log; returns the bytes written and, if it stopped short, why."""
        written = 0
        try:
            written = os.write(self._fd, data)
            if written < len(data):
                view = memoryview(data)
                while written < len(data):
                    written += os.write(self._fd, view[written:])
        except OSError as exc:
            return written, exc
        return written, None

    def _resync(self, size: int) -> int:
        """Reads the last line (under the lock): sets the previous hash, returns the size. A torn
        last line (a crash mid-append) is closed with a newline and chained by its raw bytes'
        hash; ``audit verify`` still reports it."""
        if size == 0:
            self._prev, self._seq = GENESIS, 0
            return 0
        last = self._last_line(size)
        if not last.endswith(b"\n"):
            self._append(b"\n")
            size += 1
            log.error("audit log ended in an incomplete record; appending after it", extra={"path": str(self.path)})
            self._prev = hashlib.sha256(last).hexdigest()
            self._seq = self._count_lines(size)
            return size
        seq = None
        try:
            record = json.loads(last)
            digest = record["hash"]
            if not isinstance(digest, str):
                raise TypeError("hash is not text")
            seq = record.get("seq")
        except (ValueError, TypeError, KeyError):
            log.error("the audit log's last line is not a record; chaining from its bytes",
                      extra={"path": str(self.path)})
            digest = hashlib.sha256(last).hexdigest()
        self._prev = digest
        # seq is the line number; a log written before seq existed is counted once
        self._seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else self._count_lines(size)
        return size

    def _last_checkpoint_mac(self) -> str:
        """The MAC of the checkpoint file's last line: each checkpoint names the one before it, so
        that removing or replacing earlier checkpoints shows. An empty file: ``genesis`` when the
        key is new, else ``lost`` (the file was removed; verify reports it)."""
        size = os.fstat(self._cp_fd).st_size
        if size == 0:
            return CHECKPOINT_GENESIS if self._new_key else CHECKPOINT_LOST
        data = os.pread(self._cp_fd, min(size, _TAIL_CHUNK), max(0, size - _TAIL_CHUNK))
        try:
            mac = json.loads(data.rstrip(b"\n").rsplit(b"\n", 1)[-1])["mac"]
            return mac if isinstance(mac, str) else CHECKPOINT_LOST
        except (ValueError, KeyError, TypeError):
            return CHECKPOINT_LOST

    def _count_lines(self, size: int) -> int:
        count, offset = 0, 0
        while offset < size:
            chunk = os.pread(self._fd, min(1 << 20, size - offset), offset)
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset += len(chunk)
        return count

    def _last_line(self, size: int) -> bytes:
        chunk = _TAIL_CHUNK
        while True:
            start = max(0, size - chunk)
            data = os.pread(self._fd, size - start, start)
            cut = data.rfind(b"\n", 0, len(data) - 1)
            if cut >= 0:
                return data[cut + 1 :]
            if start == 0:
                return data
            chunk *= 4

    def close(self) -> None:
        if self._fd >= 0 and self._anchor is not None:
            try:
                self.checkpoint()  # the head at shutdown, signed
            except AuditError as exc:
                log.error("audit checkpoint lost", extra={"error": str(exc)})
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._cp_fd >= 0:
                os.close(self._cp_fd)
                self._cp_fd = -1


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for job in batch:
        job.error = exc


def _wake(job: _Pending) -> None:
    """Each waiting caller's lock is released exactly once: its record is done, or it leads."""
    assert job.wake is not None
    job.wake.release()


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    records: int  # records checked and found intact
    head: str  # hash of the last intact record (GENESIS for an empty log)
    broken_line: int | None = None  # 1-based line of the first broken (or missing) record
    reason: str = ""
    checkpoint: int | None = None  # records covered by the newest valid signed checkpoint
    anchor_problem: str = ""  # the checkpoint file itself is damaged, forged or missing

    @property
    def intact(self) -> bool:
        return self.broken_line is None and not self.anchor_problem


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f


def read_checkpoints(path: Path, key: bytes | None) -> tuple[dict[int, str], str]:
    """The signed heads {seq: hash} of a checkpoint file, and the first problem found ('' if none):
    a checkpoint whose MAC fails, a broken checkpoint chain, none at all."""
    marks: dict[int, str] = {}
    if key is None:
        return marks, f"checkpoints in {path} but no audit key to check them (audit.key_file removed?)"
    prev, last_seq = CHECKPOINT_GENESIS, -1
    try:
        lines = list(_lines(path))
    except FileNotFoundError:
        lines = []
    if not lines:
        return marks, f"no signed checkpoint in {path} although the audit key exists (checkpoints removed?)"
    for number, line in enumerate(lines, start=1):
        try:
            cp = json.loads(line)
            seq, head, mac, link = cp["seq"], cp["head"], cp["mac"], cp["prev"]
            if not (isinstance(seq, int) and isinstance(head, str) and isinstance(mac, str)):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return marks, f"checkpoint line {number} is not a checkpoint"
        if not hmac.compare_digest(checkpoint_mac(key, cp), mac):
            return marks, f"checkpoint line {number}: MAC does not match (forged or altered checkpoint, or another key)"
        if link != prev:
            return marks, (f"checkpoint line {number} does not follow the checkpoint before it "
                           "(checkpoints removed, or the checkpoint file replaced)")
        if seq < last_seq or marks.get(seq, head) != head:
            return marks, f"checkpoint line {number} contradicts an earlier checkpoint"
        marks[seq], prev, last_seq = head, mac, seq
    return marks, ""


def verify(path: Path, key: bytes | None = None, checkpoints: Path | None = None) -> Verdict:
    """Checks the whole chain; stops at the first broken record. With ``checkpoints`` (and the key
    that signed them), the log must also reach and match every signed checkpoint: that catches a
    cut tail, an emptied log and a chain recomputed after an edit. Raises OSError if unreadable."""
    marks, problem = read_checkpoints(checkpoints, key) if checkpoints is not None else ({}, "")
    newest = max(marks) if marks else None
    prev = GENESIS
    count = 0
    for number, line in enumerate(_lines(path), start=1):
        if not line.endswith(b"\n"):
            return Verdict(count, prev, number, "incomplete record (no line end: torn write or truncation)")
        try:
            record = json.loads(line)
        except ValueError:
            return Verdict(count, prev, number, "not a JSON record")
        if not isinstance(record, dict) or not isinstance(record.get("hash"), str) or not isinstance(
            record.get("prev"), str
        ):
            return Verdict(count, prev, number, "not an audit record (no hash/prev)")
        if record_hash(record) != record["hash"]:
            return Verdict(count, prev, number, "record was altered: its hash does not match its content")
        if record["prev"] != prev:
            if number == 1:
                why = "the first record does not chain from the genesis value (records removed from the start)"
            else:
                why = (
                    f"chain broken: prev does not match the hash of line {number - 1} "
                    "(a record was deleted, inserted or reordered)"
                )
            return Verdict(count, prev, number, why)
        if "seq" in record and record["seq"] != number:
            return Verdict(count, prev, number, f"record numbered {record['seq']} found at line {number}")
        if number in marks and marks[number] != record["hash"]:
            return Verdict(count, prev, number, (
                "record does not match the signed checkpoint for it: the chain was recomputed after "
                "an edit or records were replaced"))
        prev = record["hash"]
        count += 1
    if newest is not None and newest > count:
        why = (f"the audit log is empty but a signed checkpoint covers {newest} records (the log was emptied)"
               if count == 0 else
               f"the log ends after {count} records but a signed checkpoint covers {newest} "
               "(records removed from the end)")
        return Verdict(count, prev, count + 1, why, newest, problem)
    if marks.get(0, GENESIS) != GENESIS:
        problem = problem or "the checkpoint of the empty log does not hold the genesis value"
    return Verdict(count, prev, checkpoint=newest, anchor_problem=problem)
