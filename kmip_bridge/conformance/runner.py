"""Replays OASIS KMIP test-case files against a server and reports strict pass counts.

Each file runs on its own TLS connection, its requests in order; placeholders bound by one
response are carried into the following requests (see :mod:`.compare` for the tolerance rules).
"""

from __future__ import annotations

import argparse
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..client import RawClient, client_context
from ..protocol.ttlv import Item, TtlvError
from .compare import State, UnboundPlaceholder, compare, substitute
from .xml_codec import parse_file, to_xml


class Transport(Protocol):
    def call(self, message: Item) -> Item: ...

    def close(self) -> None: ...


@dataclass
class FileResult:
    name: str
    profile: str
    version: str
    passed: bool
    differences: list[str] = field(default_factory=list)
    steps: int = 0
    steps_run: int = 0
    failed_step: int | None = None  # first step with differences
    actual_xml: str | None = None  # that step's actual response, for diagnostics
    error: str | None = None  # parse, connection or protocol error that stopped the file
    seconds: float = 0.0


def profile_of(path: str | Path) -> tuple[str, str]:
    """("CS-BC", "1.4") for CS-BC-M-GCM-1-14.xml; the profile is the name before ``-M-``."""
    stem = Path(path).stem
    profile = stem.split("-M-")[0] if "-M-" in stem else stem
    m = re.search(r"-(\d)(\d)$", stem)
    return profile, f"{m.group(1)}.{m.group(2)}" if m else "?"


def run_file(path: str | Path, host: str = "localhost", port: int = 5696,
             ssl_ctx: ssl.SSLContext | None = None, *, time_tolerance: float = 120.0,
             connect: Callable[[], Transport] | None = None) -> FileResult:
    """Replays one file. ``connect`` overrides the TLS connection (tests pass a fake transport)."""
    profile, version = profile_of(path)
    result = FileResult(Path(path).name, profile, version, passed=False)
    started = time.monotonic()
    try:
        pairs = parse_file(path)
    except (ValueError, SyntaxError) as exc:  # XmlCodecError; ElementTree's ParseError
        result.error = f"cannot parse: {exc}"
        return _done(result, started)
    result.steps = len(pairs)
    if connect is None:
        connect = _tls_connector(host, port, ssl_ctx)
    state = State(time_tolerance=time_tolerance)
    try:
        transport = connect()
    except OSError as exc:
        result.error = f"cannot connect: {exc}"
        return _done(result, started)
    try:
        for index, (request, expected) in enumerate(pairs):
            try:
                concrete = substitute(request, state)
            except UnboundPlaceholder as exc:
                result.error = f"step {index}: {exc.args[0]}"
                break
            state.request = concrete
            try:
                actual = transport.call(concrete)
            except (OSError, TtlvError) as exc:
                result.error = f"step {index}: no valid response: {exc}"
                break
            state.received_at = time.time()
            result.steps_run += 1
            diffs = compare(expected, actual, state)
            if diffs and result.failed_step is None:
                result.failed_step = index
                result.actual_xml = to_xml(actual)
            result.differences += [f"step {index}: {d}" for d in diffs]
    finally:
        transport.close()
    result.passed = not result.differences and result.error is None and result.steps_run == result.steps
    return _done(result, started)


def _done(result: FileResult, started: float) -> FileResult:
    result.seconds = time.monotonic() - started
    return result


def _tls_connector(host: str, port: int, ssl_ctx: ssl.SSLContext | None) -> Callable[[], Transport]:
    if ssl_ctx is None:
        raise ValueError("an SSL context is needed to reach a server")
    return lambda: RawClient(host, port, ssl_ctx)


def run_all(paths: Iterable[str | Path], host: str = "localhost", port: int = 5696,
            ssl_ctx: ssl.SSLContext | None = None, **kwargs: object) -> list[FileResult]:
    return [run_file(p, host, port, ssl_ctx, **kwargs) for p in expand(paths)]  # type: ignore[arg-type]


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories as their ``*.xml`` files (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.rglob("*.xml")) if p.is_dir() else [p]
    return out


def load_expected_failures(path: str | Path) -> dict[str, str]:
    """``name: reason`` lines (plain text or a YAML mapping/list); names with or without ``.xml``."""
    failures: dict[str, str] = {}
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        line = line.removeprefix("- ").strip()
        if not line or line == "---":
            continue
        name, _, reason = line.partition(":")
        name = name.strip().strip("'\"")
        failures[name.removesuffix(".xml")] = reason.strip().strip("'\"")
    return failures


# -- reporting -------------------------------------------------------------------------------------
def report(results: Sequence[FileResult], expected: dict[str, str], verbose: bool = False,
           out: Callable[[str], None] = print) -> int:
    """Prints per-profile strict counts and a total; returns the exit status (0: no surprises)."""
    groups: dict[tuple[str, str], list[FileResult]] = {}
    for r in results:
        groups.setdefault((r.version, r.profile), []).append(r)
    out(f"{'version':<8}{'profile':<14}{'passed':>8}{'total':>7}  failing")
    for (version, profile), rs in sorted(groups.items()):
        failing = [r.name.removesuffix(".xml") for r in rs if not r.passed]
        out(f"{version:<8}{profile:<14}{sum(r.passed for r in rs):>8}{len(rs):>7}  {' '.join(failing)}")
    passed = sum(r.passed for r in results)
    unexpected = [r for r in results if not r.passed and r.name.removesuffix(".xml") not in expected]
    xpass = [r for r in results if r.passed and r.name.removesuffix(".xml") in expected]
    xfail = sum(1 for r in results if not r.passed) - len(unexpected)
    out(f"total: {passed}/{len(results)} passed strictly; {xfail} expected failures, "
        f"{len(unexpected)} unexpected failures, {len(xpass)} unexpectedly passing")
    for r in xpass:
        out(f"  XPASS {r.name} (listed: {expected[r.name.removesuffix('.xml')]})")
    if verbose:
        for r in results:
            if not r.passed:
                _explain(r, expected.get(r.name.removesuffix(".xml")), out)
    return 1 if unexpected or xpass else 0


def _explain(r: FileResult, reason: str | None, out: Callable[[str], None], limit: int = 8) -> None:
    tag = f" (expected failure: {reason})" if reason is not None else ""
    out(f"\n== {r.name}{tag}: {r.steps_run}/{r.steps} steps run")
    if r.error:
        out(f"  error: {r.error}")
    for d in r.differences[:limit]:
        out(f"  {d}")
    if len(r.differences) > limit:
        out(f"  ... {len(r.differences) - limit} more")
    if r.actual_xml:
        out(f"  actual response of step {r.failed_step}:")
        out("\n".join("    " + line for line in r.actual_xml.splitlines()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kmip-bridge conformance", description=__doc__)
    parser.add_argument("paths", nargs="+", help="test-case files or directories of them")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5696)
    parser.add_argument("--ca", type=Path, required=True, help="CA bundle that signed the server")
    parser.add_argument("--cert", type=Path, help="client certificate")
    parser.add_argument("--key", type=Path, help="client private key")
    parser.add_argument("--expected-failures", type=Path, help="file of 'name: reason' lines")
    parser.add_argument("--time-tolerance", type=float, default=120.0, help="seconds allowed around $NOW")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the first differences per failing file")
    args = parser.parse_args(argv)
    ctx = client_context(args.ca, args.cert, args.key)
    expected = load_expected_failures(args.expected_failures) if args.expected_failures else {}
    results = run_all(args.paths, args.host, args.port, ctx, time_tolerance=args.time_tolerance)
    return report(results, expected, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
