"""Log handlers for the CLI: text or JSON lines on stderr, secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
import time

from ._redact import redact_text
from .errors import ConfigError

__all__ = ["configure_logging"]


class _RedactFilter(logging.Filter):
    """Redact URLs in every record: a last line of defence for query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(data)


class _TextFormatter(logging.Formatter):
    def formatException(self, ei: object) -> str:  # noqa: N802 - logging's name
        return redact_text(super().formatException(ei))  # type: ignore[arg-type]


def configure_logging(*, fmt: str, quiet: bool, debug: bool) -> None:
    """Send storage_init's logs to stderr in `fmt` (``text`` or ``json``).

    Raises:
        ConfigError: `fmt` is neither text nor json.
    """
    if fmt not in ("text", "json"):
        msg = f"log format must be text or json, not {fmt!r}"
        raise ConfigError(msg)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactFilter())
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(
            _TextFormatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger("storage_init")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO)
