"""The audit trail: one hash-chained JSON line per batch item, appended by every worker process.

Each record carries ``prev`` (the ``hash`` of the record before it, or ``GENESIS`` for the first)
and its own ``hash``: SHA-256 over the canonical JSON of the record without ``hash`` (sorted keys,
no whitespace, UTF-8). Editing a record breaks its own hash; deleting, inserting or reordering
records breaks the next record's ``prev``. Removing records from the *end* leaves a valid, shorter
chain: ``audit verify`` prints the head hash so it can be anchored elsewhere.

Records name who did what to which object and how it ended: never key material, never a PIN.

Several processes append to the same file. Each append takes ``flock`` on the file (and a thread
lock, since flock does not exclude threads sharing one open file). The previous hash is cached per
process together with the file size after that process's last write; only when the size differs
(another process wrote meanwhile) is the last line read back.
"""

from __future__ import annotations

import fcntl
import hashlib
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


class AuditError(Exception):
    """The audit record could not be written."""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # ASCII only: \uXXXX escapes


def canonical(record: dict[str, Any]) -> bytes:
    return _CANONICAL.encode(record).encode()


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


class AuditLog:
    """Appends hash-chained records to ``path``. Thread- and multi-process-safe; open it after
    ``fork()`` (the composition root builds one per worker)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open the audit log {path}: {exc.strerror}") from None
        self._lock = threading.Lock()
        self._size = -1  # the file's size right after this process's last append; -1: unknown
        self._prev = GENESIS

    def write(self, fields: dict[str, Any]) -> str:
        """Appends one record made of ``fields`` (JSON scalars and lists; not ``ts``, ``prev`` or
        ``hash``, which are added here); returns its hash. Raises AuditError."""
        with self._lock:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise AuditError(f"cannot lock the audit log {self.path}: {exc.strerror}") from None
            try:
                size = os.fstat(self._fd).st_size
                if size != self._size:
                    size = self._resync(size)
                record = {**fields, "ts": _timestamp(time.time()), "prev": self._prev}
                body = canonical(record)
                digest = hashlib.sha256(body).hexdigest()
                # The line is the record plus its hash; verification re-canonicalises without it.
                line = body[:-1] + b',"hash":"' + digest.encode() + b'"}\n'
                self._append(line)
                self._prev, self._size = digest, size + len(line)
                return digest
            except OSError as exc:
                self._size = -1  # whatever reached the file, read it back next time
                raise AuditError(f"cannot append to the audit log {self.path}: {exc.strerror}") from None
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _resync(self, size: int) -> int:
        """Reads the last line (under the lock): sets the previous hash, returns the size. A torn
        last line (a crash mid-append) is closed with a newline and chained by its raw bytes'
        hash; ``audit verify`` still reports it."""
        if size == 0:
            self._prev = GENESIS
            return 0
        last = self._last_line(size)
        if not last.endswith(b"\n"):
            self._append(b"\n")
            size += 1
            log.error("audit log ended in an incomplete record; appending after it", extra={"path": str(self.path)})
            self._prev = hashlib.sha256(last).hexdigest()
            return size
        try:
            record = json.loads(last)
            digest = record["hash"]
            if not isinstance(digest, str):
                raise TypeError("hash is not text")
        except (ValueError, TypeError, KeyError):
            log.error("the audit log's last line is not a record; chaining from its bytes",
                      extra={"path": str(self.path)})
            digest = hashlib.sha256(last).hexdigest()
        self._prev = digest
        return size

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
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    records: int  # records checked and found intact
    head: str  # hash of the last intact record (GENESIS for an empty log)
    broken_line: int | None = None  # 1-based line of the first broken record
    reason: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_line is None


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f


def verify(path: Path) -> Verdict:
    """Checks the whole chain; stops at the first broken record. Raises OSError if unreadable."""
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
        prev = record["hash"]
        count += 1
    return Verdict(count, prev)
