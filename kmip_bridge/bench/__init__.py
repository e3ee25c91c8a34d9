"""Benchmark harness: a cheap multi-process KMIP load generator against kmip-bridge and, with
``--compare``, the stock PyKMIP server. Run ``python -m kmip_bridge.bench --help``."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .runner import main as run

    return run(argv)


__all__ = ["main"]
