"""S3 backend on aiobotocore (extra ``s3``).

Semantics of ``s3://bucket/key``: the object if `key` exists, else the prefix
``key/`` (never sibling keys such as ``key-v2/``); ``s3://bucket`` is the bucket.
Ranged GETs are pinned with If-Match on the ETag. Whole-object GETs ask for checksum
mode, so that small files get their stored CRCs without a HEAD.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import UNSIGNED
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from .._redact import redact_text
from ..errors import (
    AccessDeniedError,
    ConfigError,
    ErrorTable,
    IntegrityError,
    NetworkError,
    ObjectChangedError,
    ObjectNotFoundError,
    RemoteError,
    TransferError,
    map_errors,
)
from ..models import ObjectInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from types_aiobotocore_s3 import S3Client

    from ..config import S3Options, StorageConfig

__all__ = ["S3Backend"]

_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {
    "401",
    "403",
    "AccessDenied",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
}
_CHANGED = {"412", "PreconditionFailed"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"}
_CHECKSUM_FIELDS = {
    "ChecksumCRC64NVME": "crc64nvme",
    "ChecksumCRC32C": "crc32c",
    "ChecksumCRC32": "crc32",
    "ChecksumSHA256": "sha256",
    "ChecksumSHA1": "sha1",
}


def _client_error(exc: BaseException, uri: str) -> TransferError:
    assert isinstance(exc, ClientError)
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    message = redact_text(str(error.get("Message") or "")) or code or str(status)
    text = f"{code}: {message}" if code and code not in message else message
    if code in _NOT_FOUND or status == 404:
        return ObjectNotFoundError(f"not found ({text})", uri=uri)
    if code in _DENIED or status in (401, 403):
        return AccessDeniedError(f"access denied ({text})", uri=uri)
    if code in _CHANGED or status == 412:
        return ObjectChangedError("object changed during the download", uri=uri)
    if status == 416:
        return IntegrityError(f"range not satisfiable ({text})", uri=uri)
    if code in _THROTTLED or status >= 500:
        return RemoteError(f"server error {status} ({text})", uri=uri)
    return TransferError(f"request failed with {status} ({text})", uri=uri)


def _simple(kind: type[TransferError], prefix: str) -> Callable[..., TransferError]:
    def build(exc: BaseException, uri: str) -> TransferError:
        detail = redact_text(str(exc)) or type(exc).__name__
        return kind(f"{prefix}: {detail}", uri=uri)

    return build


_ERRORS: ErrorTable = {
    ClientError: _client_error,
    NoCredentialsError: lambda exc, uri: AccessDeniedError(
        "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "a profile, IRSA, or awsAnonymousCredential=true)",
        uri=uri,
    ),
    FlexibleChecksumError: _simple(IntegrityError, "checksum mismatch"),
    ParamValidationError: _simple(TransferError, "invalid request"),
    ReadTimeoutError: _simple(NetworkError, "read timed out"),
    ConnectTimeoutError: _simple(NetworkError, "connect timed out"),
    EndpointConnectionError: _simple(NetworkError, "cannot connect"),
    ConnectionClosedError: _simple(NetworkError, "connection closed"),
    ResponseStreamingError: _simple(NetworkError, "connection broken"),
    BotoCoreError: _simple(TransferError, "S3 client error"),
    aiohttp.ClientError: _simple(NetworkError, "connection error"),
    asyncio.TimeoutError: _simple(NetworkError, "timed out"),
    OSError: _simple(NetworkError, "connection error"),
}


def _strip_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def _info(key: str, response: Any, *, size: int | None = None) -> ObjectInfo:
    """Build an `ObjectInfo` from HeadObject/GetObject response fields."""
    checksums = {
        name: response[field]
        for field, name in _CHECKSUM_FIELDS.items()
        if response.get(field)
    }
    sse = response.get("ServerSideEncryption") or ""
    return ObjectInfo(
        key=key,
        size=int(response["ContentLength"]) if size is None else size,
        etag=_strip_etag(response.get("ETag")),
        checksums=MappingProxyType(checksums),
        checksum_type=response.get("ChecksumType"),
        # Under SSE-KMS and SSE-C the ETag is not an MD5 of the content.
        etag_is_md5=not sse.startswith("aws:kms")
        and not response.get("SSECustomerAlgorithm"),
        parts_count=response.get("PartsCount"),
        detailed=True,
    )


class _Body:
    """A GetObject body, read chunk by chunk as aiohttp buffered it.

    Reading the aiohttp stream directly (`readany`) hands over the buffered chunks
    as they are; `StreamingBody.read(n)` would join them into new n-byte strings, a
    copy of every byte. Lengths are checked by the engine (and truncation raises
    here), checksums by `verify`.
    """

    def __init__(self, body: Any, uri: str, info: ObjectInfo | None) -> None:
        self._content = body.raw_stream.content
        self._uri = uri
        self.info = info

    async def read(self, size_hint: int) -> bytes:
        del size_hint
        with map_errors(_ERRORS, uri=self._uri):
            data: bytes = await self._content.readany()
            return data


class S3Backend:
    """The S3 backend. One client (and connection pool) serves every request.

    Args:
        options: endpoint, region, credentials and timeouts.
        max_connections: size of the connection pool; at least the engine's
            `max_concurrency`.
    """

    def __init__(self, options: S3Options, *, max_connections: int = 16) -> None:
        self._options = options
        self._max_connections = max_connections
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None
        self._lock = anyio.Lock()
        self._closed = False

    @classmethod
    def from_config(cls, config: StorageConfig) -> Self:
        """Build the backend from ``config.s3``."""
        return cls(config.s3, max_connections=config.transfer.max_concurrency + 4)

    def _client_kwargs(self) -> dict[str, Any]:
        opts = self._options
        style = opts.addressing_style
        # KServe #4157: the legacy global endpoint outside us-east-1 answers
        # PermanentRedirect unless buckets are addressed virtually.
        if opts.endpoint_url == "https://s3.amazonaws.com" and opts.region not in (
            None,
            "us-east-1",
        ):
            style = "virtual"
        config = AioConfig(
            signature_version=UNSIGNED if opts.anonymous else None,
            s3={
                "addressing_style": style,
                "use_accelerate_endpoint": opts.use_accelerate,
            },
            connect_timeout=opts.connect_timeout,
            read_timeout=opts.read_timeout,
            retries={"max_attempts": opts.max_attempts, "mode": "standard"},
            max_pool_connections=self._max_connections,
            # We compute and check checksums ourselves, once; botocore only checks
            # when checksum mode is asked for (whole-object GETs of small files).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs: dict[str, Any] = {"config": config}
        if opts.endpoint_url:
            kwargs["endpoint_url"] = opts.endpoint_url
        if opts.region:
            kwargs["region_name"] = opts.region
        if not opts.verify_ssl or (opts.endpoint_url or "").startswith("http://"):
            # Plain http has no TLS to verify; skipping it also skips loading the
            # system CA store (tens of ms of start-up).
            kwargs["verify"] = False
        elif opts.ca_bundle:
            kwargs["verify"] = opts.ca_bundle
        if opts.access_key_id and opts.secret_access_key:
            kwargs["aws_access_key_id"] = opts.access_key_id
            kwargs["aws_secret_access_key"] = opts.secret_access_key
        return kwargs

    async def _get_client(self) -> S3Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._closed:
                msg = "the S3 backend is closed"
                raise RuntimeError(msg)
            if self._client is None:
                try:
                    kwargs = self._client_kwargs()
                    creator = get_session().create_client("s3", **kwargs)
                    with map_errors(_ERRORS, uri="s3://"):
                        self._client = await self._stack.enter_async_context(creator)
                except ValueError as exc:
                    msg = f"invalid S3 configuration: {redact_text(str(exc))}"
                    raise ConfigError(msg) from None
        return self._client

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """See `Backend.stat`."""
        client = await self._get_client()
        uri = f"s3://{bucket}/{key}"
        try:
            with map_errors(_ERRORS, uri=uri):
                response = await client.head_object(
                    Bucket=bucket, Key=key, ChecksumMode="ENABLED"
                )
        except ObjectNotFoundError:
            return None
        return _info(key, response)

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        """See `Backend.list`."""
        client = await self._get_client()
        uri = f"s3://{bucket}/{prefix}"
        paginator = client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix).__aiter__()
        while True:
            with map_errors(_ERRORS, uri=uri):
                try:
                    page = await pages.__anext__()
                except StopAsyncIteration:
                    return
            for item in page.get("Contents", ()):
                yield ObjectInfo(
                    key=item["Key"],
                    size=int(item["Size"]),
                    etag=_strip_etag(item.get("ETag")),
                )

    async def describe(self, bucket: str, info: ObjectInfo) -> ObjectInfo:
        """See `Backend.describe`."""
        if info.detailed:
            return info
        client = await self._get_client()
        uri = f"s3://{bucket}/{info.key}"
        extra: dict[str, Any] = {"IfMatch": f'"{info.etag}"'} if info.etag else {}
        with map_errors(_ERRORS, uri=uri):
            response = await client.head_object(
                Bucket=bucket, Key=info.key, ChecksumMode="ENABLED", **extra
            )
        return _info(info.key, response)

    async def _head_part(
        self, bucket: str, key: str, etag: str | None, n: int
    ) -> tuple[int, int]:
        """Return (length of part `n`, parts count) from a HEAD with PartNumber."""
        client = await self._get_client()
        extra: dict[str, Any] = {"IfMatch": f'"{etag}"'} if etag else {}
        with map_errors(_ERRORS, uri=f"s3://{bucket}/{key}"):
            response = await client.head_object(
                Bucket=bucket, Key=key, PartNumber=n, **extra
            )
        return int(response["ContentLength"]), int(response.get("PartsCount") or 1)

    async def part_sizes(self, bucket: str, info: ObjectInfo) -> list[int]:
        """See `Backend.part_sizes`.

        Uploaders use one part size for all parts but the last, so two HEADs (parts
        1 and N) usually suffice; otherwise every part is asked for.
        """
        key, etag = info.key, info.etag
        first, count = await self._head_part(bucket, key, etag, 1)
        if count == 1:
            return [info.size]
        last = info.size - first * (count - 1)
        if 0 < last <= first and (
            (await self._head_part(bucket, key, etag, count))[0] == last
        ):
            return [first] * (count - 1) + [last]
        sizes = [0] * count
        limiter = anyio.CapacityLimiter(8)

        async def one(n: int) -> None:
            async with limiter:
                sizes[n - 1] = (await self._head_part(bucket, key, etag, n))[0]

        async with anyio.create_task_group() as tg:
            for n in range(1, count + 1):
                tg.start_soon(one, n)
        if sum(sizes) != info.size:
            msg = f"the {count} parts add up to {sum(sizes)} bytes, not {info.size}"
            raise IntegrityError(msg, uri=f"s3://{bucket}/{key}")
        return sizes

    @asynccontextmanager
    async def open_range(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> AsyncIterator[_Body]:
        """See `Backend.open_range`."""
        client = await self._get_client()
        uri = f"s3://{bucket}/{info.key}"
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": info.key}
        if info.etag:
            kwargs["IfMatch"] = f'"{info.etag}"'
        if whole:
            kwargs["ChecksumMode"] = "ENABLED"
        else:
            kwargs["Range"] = f"bytes={start}-{end - 1}"
        with map_errors(_ERRORS, uri=uri):
            response = await client.get_object(**kwargs)
        body = response["Body"]
        try:
            if whole:
                got_info: ObjectInfo | None = _info(info.key, response)
            else:
                got_info = None
                expected = f"bytes {start}-{end - 1}/{info.size}"
                if response.get("ContentRange") != expected:
                    msg = (
                        f"asked for {expected}, "
                        f"got Content-Range {response.get('ContentRange')!r}"
                    )
                    raise IntegrityError(msg, uri=uri)
            yield _Body(body, uri, got_info)
        finally:
            body.close()

    async def aclose(self) -> None:
        """See `Backend.aclose`. Runs to the end even when the caller is cancelled."""
        # Shielded: a cancelled download must still close its connection pool.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                self._closed = True
                self._client = None
                await self._stack.aclose()
