"""Seeding the real S3 server as real clients upload (sync botocore, tests only)."""

from __future__ import annotations

from typing import Any

import botocore.session
from botocore.config import Config

from tests.conftest import S3Server


class S3Seeder:
    """Uploads objects to the test server, single-part or multipart."""

    def __init__(self, server: S3Server) -> None:
        self.server = server
        self.client: Any = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                max_pool_connections=16,
            ),
        )

    def put(
        self,
        key: str,
        data: bytes,
        *,
        part_size: int | None = None,
        checksum: str | None = None,
        composite: bool = False,
        bucket: str | None = None,
    ) -> None:
        """Upload `data`; with `checksum`, the store keeps that CRC (as SDKs do)."""
        bucket = bucket or self.server.bucket
        algo = checksum.upper() if checksum else None
        if not part_size or len(data) <= part_size:
            extra = {"ChecksumAlgorithm": algo} if algo else {}
            self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
            return
        create: dict[str, Any] = {}
        if algo:
            create = {
                "ChecksumAlgorithm": algo,
                "ChecksumType": "COMPOSITE" if composite else "FULL_OBJECT",
            }
        upload = self.client.create_multipart_upload(Bucket=bucket, Key=key, **create)
        parts = []
        for number, start in enumerate(range(0, len(data), part_size), 1):
            extra = {"ChecksumAlgorithm": algo} if algo else {}
            response = self.client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data[start : start + part_size],
                **extra,
            )
            part = {"PartNumber": number, "ETag": response["ETag"]}
            part.update({k: v for k, v in response.items() if k.startswith("Checksum")})
            parts.append(part)
        self.client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )
