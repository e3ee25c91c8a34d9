#!/usr/bin/env python3
"""Benchmark harness: ``scripts/bench.py --help`` (the same as ``python -m kmip_bridge.bench``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmip_bridge.bench import main

if __name__ == "__main__":
    sys.exit(main())
