"""Client-supplied text in log lines: clipped in every format, escaped in the text format, so
that a newline in a CN, a Log message or an Interop identifier cannot forge log lines and one
huge value cannot become a huge line."""

from __future__ import annotations

import json
import logging

import pytest

from kmip_bridge import logs

FORGED = "hi\n2026-01-01 00:00:00,000 INFO kmip_bridge.server: admin granted\r\x1b[2J\u2028x"


def _record(msg: str = "client log message", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("kmip_bridge.operations", logging.INFO, __file__, 1, msg, None, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


@pytest.mark.parametrize("formatter", [logs.TextFormatter(), logs.JsonFormatter()], ids=["text", "json"])
def test_control_characters_never_break_a_line(formatter: logging.Formatter) -> None:
    line = formatter.format(_record(FORGED, text=FORGED, identity="eve\nmallory", groups=["a\nb"]))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "admin granted" in line and "mallory" in line  # the text is kept, only made harmless


def test_text_format_escapes_and_quotes_values() -> None:
    line = logs.TextFormatter().format(_record(text=FORGED, identity="eve identity=admin", op="GET"))
    assert "\\n2026-01-01" in line and "\\r\\x1b[2J\\u2028x" in line  # visible, escaped
    assert 'identity="eve identity=admin"' in line  # a value cannot pose as another field
    assert " op=GET" in line  # plain values stay plain (control)
    assert "text=\"hi\\n2026" in line


def test_json_format_round_trips_the_escaped_text() -> None:
    rec = json.loads(logs.JsonFormatter().format(_record(text=FORGED)))
    assert rec["text"] == FORGED  # nothing lost: JSON escapes, the reader gets the text back


@pytest.mark.parametrize("formatter", [logs.TextFormatter(), logs.JsonFormatter()], ids=["text", "json"])
def test_a_huge_value_is_clipped(formatter: logging.Formatter) -> None:
    line = formatter.format(_record("m" * 1_000_000, interop_id="x" * 1_000_000, groups=["g" * 1_000_000]))
    assert len(line) < 4 * logs.MAX_TEXT + 500
    assert f"[{1_000_000 - logs.MAX_TEXT} more characters]" in line
    small = formatter.format(_record(interop_id="x" * logs.MAX_TEXT))  # control: at the limit, kept whole
    assert "x" * logs.MAX_TEXT in small and "more characters" not in small


def test_a_traceback_stays_on_one_line_in_text_format() -> None:
    try:
        raise ValueError("bad\nline")
    except ValueError:
        import sys

        record = _record()
        record.exc_info = sys.exc_info()
    line = logs.TextFormatter().format(record)
    assert "\n" not in line and "Traceback" in line and "bad\\nline" in line
