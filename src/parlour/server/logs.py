"""Structured server logs: `text` for people, `json` (one object a line) for machines.

Log calls pass structured fields with ``extra={"fields": {...}}``; both formats show them. Message
bodies are logged only at DEBUG; passwords never (nothing in the server passes them here). Every
value is escaped so that no input can end a line or forge a field: the JSON format is JSON,
and the text format quotes any value that is not plain printable ASCII (JSON string escapes,
plus the C1 controls and Unicode line separators JSON would leave as they are).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "fields"]

_ROOT = "parlour"


def fields(**values: object) -> dict[str, Any]:
    """``log.info("login", extra=fields(user="bob", peer="1.2.3.4:5"))``."""
    return {"fields": values}


def _record_fields(record: logging.LogRecord) -> Mapping[str, object]:
    value = getattr(record, "fields", None)
    return value if isinstance(value, Mapping) else {}


#: a value shown as it is in the text format: printable ASCII without spaces, quotes or `=`
_PLAIN = re.compile(r"[!#-<>-~]+")
#: what json.dumps(ensure_ascii=False) leaves as it is but a reader may take for a line break
#: or a terminal control: C1 controls and the Unicode line and paragraph separators
_BREAKS = re.compile("[\x7f-\x9f\u2028\u2029]")


def _shown(value: object) -> str:
    """One field's value in the text format: never spans lines, never forges a field."""
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    return _BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _record_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        text = json.dumps(out, default=str, ensure_ascii=False)
        return _BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d}Z", f"{record.levelname:<7}", record.getMessage()]
        for key, value in _record_fields(record).items():
            parts.append(f"{key}={_shown(value)}")
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str, fmt: str, stream: IO[str] | None = None) -> logging.Handler:
    """Send the ``parlour`` logger tree to ``stream`` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger = logging.getLogger(_ROOT)
    for old in list(logger.handlers):
        if getattr(old, "_parlour", False):
            logger.removeHandler(old)
    handler._parlour = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
