"""Replay of the OASIS KMIP conformance test vectors (XML test cases) against a server.

``xml_codec`` reads the vectors, ``compare`` checks a response against a vector's template (its
tolerance rules are listed there), ``runner`` replays files and reports per-profile counts
(``python -m kmip_bridge.conformance.runner``). The ``compare`` function is not re-exported: it
would shadow the ``compare`` module.
"""

from __future__ import annotations

import importlib

from .compare import State, substitute
from .xml_codec import Placeholder, Template, parse_file, to_xml

_RUNNER = {"FileResult", "main", "run_all", "run_file"}


def __getattr__(name: str) -> object:
    # Lazy, so that ``python -m kmip_bridge.conformance.runner`` does not import runner twice.
    if name in _RUNNER:
        return getattr(importlib.import_module(".runner", __name__), name)
    raise AttributeError(name)


__all__ = [
    "FileResult",
    "Placeholder",
    "State",
    "Template",
    "main",
    "parse_file",
    "run_all",
    "run_file",
    "substitute",
    "to_xml",
]
