"""Parse and normalise source URIs into frozen `ObjectURI` values. No I/O here.

Scheme aliases are resolved here and nowhere else: ``gcs://`` becomes ``gs://`` and
``abfs://`` becomes ``az://``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ._redact import redact
from .errors import InvalidURIError

__all__ = ["ObjectURI", "parse_uri"]

_ALIASES = {"gcs": "gs", "abfs": "az"}
_BUCKETED = frozenset({"s3", "gs", "az", "memory"})
_HTTP = frozenset({"http", "https"})
# Letters, digits, dots, hyphens and underscores; the store enforces its own
# length rules (S3: 3-63), which S3-compatible servers relax.
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


@dataclass(frozen=True, slots=True)
class ObjectURI:
    """A parsed source URI.

    Attributes:
        scheme: the canonical scheme (``s3``, ``gs``, ``az``, ``http``, ``https``).
        bucket: bucket or container name; the host for http(s).
        key: the object key or prefix, without a leading ``/``; may be empty.
        raw: the URI as given. Never log it: use `display`.
    """

    scheme: str
    bucket: str
    key: str
    raw: str

    @property
    def display(self) -> str:
        """The URI without secrets, for logs and errors."""
        return redact(self.raw)

    @property
    def name(self) -> str:
        """The file name of a single object: the key's (or URL path's) last part."""
        if self.scheme in _HTTP:
            return unquote(urlsplit(self.raw).path.rsplit("/", 1)[-1])
        return self.key.rsplit("/", 1)[-1]

    def child(self, key: str) -> str:
        """Return the display URI of another key in the same bucket."""
        return f"{self.scheme}://{self.bucket}/{key}"


def parse_uri(uri: str) -> ObjectURI:
    """Parse `uri` into an `ObjectURI`.

    Raises:
        InvalidURIError: the URI has no scheme, no bucket, a NUL byte, or a malformed
            bucket name.
    """
    if "\x00" in uri:
        raise InvalidURIError(uri, "contains a NUL byte")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidURIError(uri, str(exc)) from exc
    scheme = _ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if not scheme or "://" not in uri:
        raise InvalidURIError(uri, "expected scheme://bucket/path")
    if scheme in _BUCKETED:
        # Keys are taken verbatim after the bucket: S3 keys may contain '?', '#' and
        # '%' literally, so the URI is split by hand rather than URL-decoded.
        rest = uri.split("://", 1)[1]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise InvalidURIError(uri, "missing bucket name")
        if not _BUCKET_RE.match(bucket):
            raise InvalidURIError(uri, f"invalid bucket name {bucket!r}")
        return ObjectURI(scheme=scheme, bucket=bucket, key=key, raw=uri)
    if not parts.netloc:
        raise InvalidURIError(uri, "missing host")
    if scheme in _HTTP:
        # The key keeps the path and query verbatim (presigned URLs sign them).
        rest = uri.split("://", 1)[1].split("#", 1)[0]
        key = rest.partition("/")[2]
        if not unquote(parts.path.rsplit("/", 1)[-1]):
            raise InvalidURIError(uri, "the URL names no file")
        return ObjectURI(scheme=scheme, bucket=parts.netloc, key=key, raw=uri)
    return ObjectURI(
        scheme=scheme,
        bucket=parts.netloc,
        key=unquote(parts.path.lstrip("/")),
        raw=uri,
    )
