"""Fault-injection tooling for the reliability runs (docs/reliability.md): a throwaway PostgreSQL
cluster that can be stopped and started, a server process that can be killed, and a ledger of what
clients saw acknowledged. Used by scripts/crash_loop.py, scripts/soak.py and the e2e tests."""
