"""What S3 says, in our terms: error codes to the error tree, headers to ObjectInfo.

Shared by the aiobotocore control plane (HEAD, LIST) and the direct GETs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._redact import redact_text
from ..errors import (
    AccessDeniedError,
    IntegrityError,
    ObjectChangedError,
    ObjectNotFoundError,
    RemoteError,
    TransferError,
)
from ..models import ObjectInfo

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["error_from_body", "info_from_headers", "info_from_response", "status_error"]

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {
    "AccessDenied",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"}
_CHECKSUMS = {
    "crc64nvme": "ChecksumCRC64NVME",
    "crc32c": "ChecksumCRC32C",
    "crc32": "ChecksumCRC32",
    "sha256": "ChecksumSHA256",
    "sha1": "ChecksumSHA1",
}
#: Error bodies are small XML documents; anything longer is not one.
MAX_ERROR_BODY = 64 * 1024


def status_error(status: int, code: str, message: str, *, uri: str) -> TransferError:
    """Map an S3 error (HTTP status, error code, message) onto our error tree."""
    message = redact_text(message) or code or str(status)
    text = f"{code}: {message}" if code and code not in message else message
    if code in _NOT_FOUND or status == 404:
        return ObjectNotFoundError(f"not found ({text})", uri=uri)
    if code in _DENIED or status in (401, 403):
        return AccessDeniedError(f"access denied ({text})", uri=uri)
    if code == "PreconditionFailed" or status == 412:
        return ObjectChangedError("object changed during the download", uri=uri)
    if status == 416:
        return IntegrityError(f"range not satisfiable ({text})", uri=uri)
    if code in _THROTTLED or status >= 500 or status == 429:
        return RemoteError(f"server error {status} ({text})", uri=uri)
    return TransferError(f"request failed with {status} ({text})", uri=uri)


def error_from_body(status: int, body: bytes, *, uri: str) -> TransferError:
    """Map an error response whose body is S3's ``<Error>`` XML (or anything)."""
    code = message = ""
    if body and len(body) <= MAX_ERROR_BODY:
        try:
            root = ET.fromstring(body)  # noqa: S314 - bounded; expat refuses entity bombs
        except ET.ParseError:
            pass
        else:
            code = root.findtext("Code") or ""
            message = root.findtext("Message") or ""
    return status_error(status, code, message, uri=uri)


def _object_info(
    key: str,
    size: int,
    etag: str | None,
    checksums: dict[str, str],
    *,
    checksum_type: str | None,
    sse: str,
    sse_customer: bool,
    parts_count: int | None,
) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=size,
        etag=etag.strip('"') if etag else None,
        checksums=MappingProxyType(checksums),
        checksum_type=checksum_type,
        # Under SSE-KMS and SSE-C the ETag is not an MD5 of the content.
        etag_is_md5=not sse.startswith("aws:kms") and not sse_customer,
        parts_count=parts_count,
        detailed=True,
    )


def info_from_response(key: str, response: Mapping[str, Any]) -> ObjectInfo:
    """Build an `ObjectInfo` from a botocore HeadObject response."""
    checksums = {
        name: response[field]
        for name, field in _CHECKSUMS.items()
        if response.get(field)
    }
    return _object_info(
        key,
        int(response["ContentLength"]),
        response.get("ETag"),
        checksums,
        checksum_type=response.get("ChecksumType"),
        sse=response.get("ServerSideEncryption") or "",
        sse_customer=bool(response.get("SSECustomerAlgorithm")),
        parts_count=response.get("PartsCount"),
    )


def info_from_headers(key: str, headers: Mapping[str, str], size: int) -> ObjectInfo:
    """Build an `ObjectInfo` from the headers of a whole-object GET."""
    checksums = {
        name: value
        for name in _CHECKSUMS
        if (value := headers.get(f"x-amz-checksum-{name}"))
    }
    parts = headers.get("x-amz-mp-parts-count")
    return _object_info(
        key,
        size,
        headers.get("ETag"),
        checksums,
        checksum_type=headers.get("x-amz-checksum-type"),
        sse=headers.get("x-amz-server-side-encryption") or "",
        sse_customer=bool(
            headers.get("x-amz-server-side-encryption-customer-algorithm")
        ),
        parts_count=int(parts) if parts and parts.isdigit() else None,
    )
