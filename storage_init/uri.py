"""Parse and normalise source URIs into frozen `ObjectURI` values. No I/O here.

Scheme aliases are resolved here and nowhere else: ``gcs://`` becomes ``gs://`` and
``abfs://`` becomes ``az://``. Azure Blob URLs (``https://<account>.blob.core.windows.net/
<container>/<path>``, and the ``<account>.zNN.blob.storage.azure.net`` DNS-zone form, as
KServe matches them) become ``az`` URIs that carry their account endpoint and SAS query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

from ._redact import redact
from .errors import InvalidURIError

__all__ = ["ObjectURI", "parse_uri"]

_ALIASES = {"gcs": "gs", "abfs": "az"}
_BUCKETED = frozenset({"s3", "gs", "az", "memory"})
_HTTP = frozenset({"http", "https"})
# Letters, digits, dots, hyphens and underscores; the store enforces its own
# length rules (S3: 3-63), which S3-compatible servers relax.
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
# Azure's special containers: the account root and the static website.
_AZURE_SPECIAL = frozenset({"$root", "$web"})
_AZURE_HOST_RE = re.compile(
    r"^[a-z0-9]{1,24}\.(?:blob\.core\.windows\.net|z[0-9]{1,2}\.blob\.storage\.azure\.net"
    r"|blob\.core\.chinacloudapi\.cn|blob\.core\.usgovcloudapi\.net)$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ObjectURI:
    """A parsed source URI.

    Attributes:
        scheme: the canonical scheme (``s3``, ``gs``, ``az``, ``http``, ``https``).
        bucket: bucket or container name; the host for http(s).
        key: the object key or prefix, without a leading ``/``; may be empty.
        raw: the URI as given. Never log it: use `display`.
        endpoint: for Azure Blob URLs, the account's URL (``https://<host>``); empty
            for ``az://``, whose account comes from the configuration.
        query: for Azure Blob URLs, the query string (a SAS token). Never log it.
    """

    scheme: str
    bucket: str
    key: str
    raw: str = field(repr=False)
    endpoint: str = ""
    query: str = field(default="", repr=False)

    @property
    def store(self) -> str:
        """What identifies the backend instance that serves this URI.

        One per scheme, except Azure Blob URLs: one per account and SAS token,
        since the credentials belong to the account.
        """
        if self.endpoint:
            return f"{self.scheme} {self.endpoint} {self.query}"
        return self.scheme

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

    @property
    def listing_prefix(self) -> str:
        """The prefix whose objects this URI downloads, if it is not one object.

        The key itself when it is empty or ends with ``/``; otherwise ``key/``
        (never sibling keys such as ``key-v2``), and the key may name an object.
        """
        key = self.key
        return key if not key or key.endswith("/") else key + "/"

    def child(self, key: str) -> str:
        """Return the display URI of another key in the same bucket."""
        if self.endpoint:
            return f"{self.endpoint}/{self.bucket}/{key}"
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
        if scheme == "az" and bucket in _AZURE_SPECIAL:
            return ObjectURI(scheme=scheme, bucket=bucket, key=key, raw=uri)
        if not _BUCKET_RE.match(bucket):
            raise InvalidURIError(uri, f"invalid bucket name {bucket!r}")
        return ObjectURI(scheme=scheme, bucket=bucket, key=key, raw=uri)
    if not parts.netloc:
        raise InvalidURIError(uri, "missing host")
    if scheme == "https" and _AZURE_HOST_RE.match(parts.hostname or ""):
        return _azure_url(uri, parts)
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


def _azure_url(uri: str, parts: SplitResult) -> ObjectURI:
    """An ``az`` URI from ``https://<account>.<blob host>/<container>/<path>?<sas>``.

    Blob names in URLs are percent-encoded, so the path is decoded (unlike S3 keys
    in ``s3://`` URIs, which are taken verbatim).
    """
    container, _, path = parts.path.lstrip("/").partition("/")
    container = unquote(container)
    if not container:
        raise InvalidURIError(uri, "the Azure Blob URL names no container")
    if container not in _AZURE_SPECIAL and not _BUCKET_RE.match(container):
        raise InvalidURIError(uri, f"invalid container name {container!r}")
    return ObjectURI(
        scheme="az",
        bucket=container,
        key=unquote(path),
        raw=uri,
        endpoint=f"https://{parts.netloc.rsplit('@', 1)[-1].lower()}",
        query=parts.query,
    )
