"""The S3 control plane on aiobotocore: HEADs, listings, endpoints, credentials.

Used when storage-init cannot send these requests itself (`S3Options.sdk`, or no
static keys: IRSA, instance profiles, SSO and the rest of the credential chain),
and imported only then: botocore costs about 240 ms of start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import UNSIGNED
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
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
    NetworkError,
    TransferError,
    map_errors,
)
from ..models import ObjectInfo
from ._aiohttp import AIOHTTP_ERRORS
from ._common import simple_error
from ._s3requests import S3Endpoint
from ._s3wire import NO_CREDENTIALS, info_from_response, s3_error
from ._sigv4 import Credentials

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AsyncExitStack

    from types_aiobotocore_s3 import S3Client

    from ..config import S3Options

__all__ = ["BotoControl"]

#: Lifetime of a presigned GET. Each request is signed anew, so this only has to
#: outlive the request's own start.
_PRESIGN_SECONDS = 900


def _client_error(exc: BaseException, uri: str) -> TransferError:
    assert isinstance(exc, ClientError)
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    code = str(error.get("Code", ""))
    return s3_error(status, code, str(error.get("Message") or ""), uri=uri)


ERRORS: ErrorTable = {
    ClientError: _client_error,
    NoCredentialsError: lambda exc, uri: AccessDeniedError(NO_CREDENTIALS, uri=uri),
    ParamValidationError: simple_error(TransferError, "invalid request"),
    ReadTimeoutError: simple_error(NetworkError, "read timed out"),
    ConnectTimeoutError: simple_error(NetworkError, "connect timed out"),
    EndpointConnectionError: simple_error(NetworkError, "cannot connect"),
    ConnectionClosedError: simple_error(NetworkError, "connection closed"),
    ResponseStreamingError: simple_error(NetworkError, "connection broken"),
    BotoCoreError: simple_error(TransferError, "S3 client error"),
    **AIOHTTP_ERRORS,
}


class BotoControl:
    """HEAD, LIST, endpoints and credentials through one aiobotocore client.

    Args:
        options: endpoint, region, credentials and timeouts.
        max_connections: the client's connection pool size.
        verify: TLS verification (False, True or a CA bundle path).
    """

    errors = ERRORS

    def __init__(
        self, options: S3Options, *, max_connections: int, verify: bool | str
    ) -> None:
        self._options = options
        self._max_connections = max_connections
        self._verify = verify
        self._session = get_session()
        self._client: S3Client | None = None
        self._credentials: Any = None
        self._endpoints: dict[str, S3Endpoint] = {}

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
            # s3v4 for presigned GETs too (botocore would presign SigV2 otherwise).
            signature_version=UNSIGNED if opts.anonymous else "s3v4",
            s3={
                "addressing_style": style,
                "use_accelerate_endpoint": opts.use_accelerate,
            },
            connect_timeout=opts.connect_timeout,
            read_timeout=opts.read_timeout,
            retries={"max_attempts": opts.max_attempts, "mode": "standard"},
            max_pool_connections=self._max_connections,
            # We compute and check checksums ourselves, once.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs: dict[str, Any] = {"config": config, "verify": self._verify}
        if opts.endpoint_url:
            kwargs["endpoint_url"] = opts.endpoint_url
        if opts.region:
            kwargs["region_name"] = opts.region
        if opts.access_key_id and opts.secret_access_key:
            kwargs["aws_access_key_id"] = opts.access_key_id
            kwargs["aws_secret_access_key"] = opts.secret_access_key
            kwargs["aws_session_token"] = opts.session_token
        return kwargs

    async def start(self, stack: AsyncExitStack) -> None:
        """Create the client; `stack` closes it.

        Raises:
            ConfigError: the endpoint or region is invalid.
        """
        try:
            creator = self._session.create_client("s3", **self._client_kwargs())
            with map_errors(ERRORS, uri="s3://"):
                self._client = await stack.enter_async_context(creator)
        except (ValueError, OSError) as exc:
            msg = f"invalid S3 configuration: {redact_text(str(exc))}"
            raise ConfigError(msg) from None

    @property
    def client(self) -> S3Client:
        assert self._client is not None
        return self._client

    async def head(
        self, bucket: str, key: str, *, part: int | None = None, if_match: str | None
    ) -> ObjectInfo:
        """HEAD `key` (checksum mode on; or part number `part`)."""
        extra: dict[str, Any] = {"IfMatch": f'"{if_match}"'} if if_match else {}
        if part is None:
            extra["ChecksumMode"] = "ENABLED"
        else:
            extra["PartNumber"] = part
        with map_errors(ERRORS, uri=f"s3://{bucket}/{key}"):
            response = await self.client.head_object(Bucket=bucket, Key=key, **extra)
        return info_from_response(key, response)

    async def list_pages(
        self, bucket: str, prefix: str
    ) -> AsyncIterator[list[ObjectInfo]]:
        """Yield the objects under `prefix`, a page at a time."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=bucket,
            Prefix=prefix,
            PaginationConfig={"PageSize": self._options.page_size},
        ).__aiter__()
        while True:
            with map_errors(ERRORS, uri=f"s3://{bucket}/{prefix}"):
                try:
                    page = await pages.__anext__()
                except StopAsyncIteration:
                    return
            yield [
                ObjectInfo(
                    key=item["Key"],
                    size=int(item["Size"]),
                    etag=item["ETag"].strip('"') if item.get("ETag") else None,
                )
                for item in page.get("Contents", ())
            ]

    async def endpoint(self, bucket: str) -> S3Endpoint:
        """The bucket's base URL and signing region, from one botocore presign."""
        endpoint = self._endpoints.get(bucket)
        if endpoint is None:
            with map_errors(ERRORS, uri=f"s3://{bucket}"):
                probe = await self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60
                )
            base, _, query = probe.partition("?")
            scope = parse_qs(query).get("X-Amz-Credential", [""])[0].split("/")
            region = scope[2] if len(scope) == 5 and scope[3] == "s3" else None
            if not base.endswith("/k") or (region is None and query):
                # Not plain SigV4 (an unusual endpoint): let botocore presign.
                endpoint = S3Endpoint(base="", region=None, presign=True)
            else:
                endpoint = S3Endpoint(base=base[:-1], region=region, presign=False)
            self._endpoints[bucket] = endpoint
        return endpoint

    async def presign(self, bucket: str, key: str, *, whole: bool) -> str:
        """A presigned GET URL, for endpoints our signer does not cover."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if whole:
            params["ChecksumMode"] = "ENABLED"
        with map_errors(ERRORS, uri=f"s3://{bucket}/{key}"):
            return await self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=_PRESIGN_SECONDS
            )

    async def keys(self) -> Credentials:
        """Current credentials: explicit keys, or the session's (refreshed) chain.

        Raises:
            AccessDeniedError: no credentials anywhere in the chain.
        """
        opts = self._options
        if opts.access_key_id and opts.secret_access_key:
            return Credentials(
                opts.access_key_id, opts.secret_access_key, opts.session_token
            )
        if self._credentials is None:
            # The session caches what the client resolved: no second lookup.
            self._credentials = await self._session.get_credentials()
            if self._credentials is None:
                raise AccessDeniedError(NO_CREDENTIALS, uri="s3://")
        frozen = await self._credentials.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)
