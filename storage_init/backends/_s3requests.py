"""The lean S3 control plane's requests, built and signed; the first ones sent ahead.

Building a request needs no event loop and little Python (this module imports
`_sigv4` and `_wire`, not anyio or asyncio), so the CLI can send a source's first
requests before it loads the engine (`send_ahead`), and `_s3lean` sends the same
ones, built here, once it runs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, urlsplit

from ..config import WIRE_BUFFER
from ._common import FIRST_PAGE_SIZE
from ._sigv4 import Credentials, object_url, sign_request
from ._wire import WirePool

if TYPE_CHECKING:
    from ..config import S3Options, StorageConfig
    from ..uri import ObjectURI

__all__ = [
    "HEAD_HEADERS",
    "S3Endpoint",
    "first_requests",
    "lean_credentials",
    "list_query",
    "s3_endpoint",
    "send_ahead",
    "signed_request",
    "tls_verify",
]

_VIRTUAL_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
#: The headers of a HEAD that asks for the object's stored checksums.
HEAD_HEADERS = {"x-amz-checksum-mode": "ENABLED"}


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class S3Endpoint(NamedTuple):
    """Where a bucket's objects live and how requests to them are signed.

    Attributes:
        base: ends with ``/``; an object's URL is base + encoded key.
        region: the signing region; None for unsigned (anonymous) requests.
        presign: let botocore presign every GET (an endpoint our signer does not
            cover).
    """

    base: str
    region: str | None
    presign: bool = False


def lean_credentials(options: S3Options) -> tuple[bool, Credentials | None]:
    """Whether the lean control plane can serve `options`, and its keys.

    Returns:
        ``(True, keys)``, ``(True, None)`` for anonymous access, or ``(False,
        None)`` when the SDK is needed (no static keys, no region or endpoint,
        acceleration, or `S3Options.sdk`).
    """
    if options.sdk or options.use_accelerate:
        return False, None
    if not (options.region or options.endpoint_url):
        return False, None
    if options.anonymous:
        return True, None
    if options.access_key_id and options.secret_access_key:
        keys = Credentials(
            options.access_key_id, options.secret_access_key, options.session_token
        )
        return True, keys
    return False, None


def s3_endpoint(
    options: S3Options, bucket: str, region: str, *, keys: Credentials | None
) -> S3Endpoint:
    """`bucket`'s base URL, and `region` to sign for (None without `keys`)."""
    signing = None if keys is None else region
    name = quote(bucket, safe="")
    if options.endpoint_url:
        parts = urlsplit(options.endpoint_url.rstrip("/"))
        if options.addressing_style == "virtual":
            base = f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path}/"
        else:
            base = f"{options.endpoint_url.rstrip('/')}/{name}/"
        return S3Endpoint(base=base, region=signing)
    if options.addressing_style != "path" and _VIRTUAL_RE.match(bucket):
        base = f"https://{bucket}.s3.{region}.amazonaws.com/"
    else:
        base = f"https://s3.{region}.amazonaws.com/{name}/"
    return S3Endpoint(base=base, region=signing)


def signed_request(
    method: str,
    endpoint: S3Endpoint,
    path: str,
    query: str,
    headers: dict[str, str],
    keys: Credentials | None,
) -> tuple[str, dict[str, str]]:
    """The URL of `path` (and `query`) at `endpoint`, and `headers`, signed."""
    url = object_url(endpoint.base, path) + (f"?{query}" if query else "")
    signed = dict(headers)
    if endpoint.region is not None and keys is not None:
        signed.update(sign_request(method, url, endpoint.region, keys, headers))
    return url, signed


def list_query(prefix: str, size: int, token: str | None) -> str:
    """The query of a ListObjectsV2 page of at most `size` keys under `prefix`."""
    params = {
        "list-type": "2",
        "encoding-type": "url",
        "max-keys": str(size),
        "prefix": prefix,
    }
    if token:
        params["continuation-token"] = token
    return "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


def first_requests(
    options: S3Options, uri: ObjectURI
) -> list[tuple[str, str, dict[str, str]]]:
    """The first requests `_s3lean.LeanControl` sends for `uri` (an s3:// one).

    The first page of `uri.listing_prefix`, and before it the HEAD when the key
    may name an object (the engine then asks for it and lists at once). Empty
    when the lean control plane does not serve `options`.

    Returns:
        ``(method, url, headers)`` of each, signed now.
    """
    lean, keys = lean_credentials(options)
    if not lean:
        return []
    region = options.region or "us-east-1"
    endpoint = s3_endpoint(options, uri.bucket, region, keys=keys)
    requests = []
    prefix = uri.listing_prefix
    if prefix != uri.key:
        requests.append(("HEAD", uri.key, "", HEAD_HEADERS))
    size = min(options.page_size, FIRST_PAGE_SIZE)
    requests.append(("GET", "", list_query(prefix, size, None), {}))
    return [
        (method, *signed_request(method, endpoint, path, query, headers, keys))
        for method, path, query, headers in requests
    ]


def send_ahead(config: StorageConfig, uri: ObjectURI) -> bool:
    """Send the first requests for `uri` now, from threads, for the engine to answer.

    The CLI calls this before it loads the engine, anyio and asyncio (~0.1 s
    here): the listing's first page (and the HEAD, for a key that may name an
    object) is on its way meanwhile, and the backend's same requests later read
    those responses (`WirePool.send_ahead`). Only what the lean control plane
    sends on direct connections, which is KServe's configuration; nothing
    otherwise. Best effort: a request that fails is sent again by the engine.

    Returns:
        Whether anything was sent (for `_wire.drop_ahead` at the end).

    Raises:
        ValueError: the endpoint's port is not a number.
    """
    opts = config.s3
    requests = [
        (method, url, headers)
        for method, url, headers in first_requests(opts, uri)
        if config.proxy.for_url(url) is None
    ]
    if not requests:
        return False
    pool = WirePool(
        verify=tls_verify(opts),
        connect_timeout=opts.connect_timeout,
        read_timeout=opts.read_timeout,
        buffer_size=WIRE_BUFFER,
    )
    for method, url, headers in requests:
        pool.send_ahead(url, headers, method=method)
    return True


def tls_verify(options: S3Options) -> bool | str:
    """TLS verification: False, True, or a CA bundle path."""
    if not options.verify_ssl or (options.endpoint_url or "").startswith("http://"):
        # Plain http has no TLS to verify; skipping it also skips loading the
        # system CA store (tens of ms of start-up).
        return False
    return options.ca_bundle or True
