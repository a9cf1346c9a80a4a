"""Remove secrets from URIs and text before they reach logs, errors or reports."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact", "redact_text"]

# Presigned S3 URLs, SAS tokens and GCS signed URLs carry their credentials in the
# query string, and http(s) URLs may carry user:password@ in the authority.
_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact(uri: str) -> str:
    """Return `uri` without its query string, fragment and userinfo.

    The result keeps the scheme, host and path, enough to name the object. A query
    string is replaced by ``?REDACTED`` so that a reader can tell one was there.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if not parts.scheme:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "REDACTED" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """Redact every URL that appears inside free text (SDK messages, tracebacks)."""
    return _URL_RE.sub(lambda m: redact(m.group(0)), text)
