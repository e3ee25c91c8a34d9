"""Test and operations tooling that is not part of the server: fault injection, kill loops and
soak runs (``reliability/``), the TTLV fuzzer (``fuzz.py``). Used by ``tests/`` and ``scripts/``."""
