"""Peer: download an S3 prefix with boto3, run in the peer's own virtualenv.

    python boto3_download.py s3://bucket/prefix DEST default|crt|threads

- ``default``: what most scripts do: ``download_file`` per object, one after another
  (s3transfer splits each large object into parallel ranges itself);
- ``crt``: the same with s3transfer's CRT transfer manager (awscrt's S3 client:
  its own connection pool, ranged GETs and threads). Built from s3transfer.crt's
  parts, not through ``preferred_transfer_client="crt"``: boto3 makes that client
  for AWS only (TLS always, its endpoint resolved without ``endpoint_url``), so
  against a local http endpoint every request failed with AWS_IO_SOCKET_CLOSED
  (the server closing on a TLS hello);
- ``threads``: s3transfer's documented tuning for many objects: eight objects at once.
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


def crt_manager(s3: Any) -> Any:
    """s3transfer's CRT transfer manager for `s3`'s endpoint, region and keys."""
    import botocore.session
    from s3transfer.crt import (
        BotocoreCRTCredentialsWrapper,
        BotocoreCRTRequestSerializer,
        CRTTransferManager,
        create_s3_crt_client,
    )

    endpoint = s3.meta.endpoint_url
    region = s3.meta.region_name
    keys = BotocoreCRTCredentialsWrapper(s3._get_credentials())
    client = create_s3_crt_client(
        region,
        crt_credentials_provider=keys.to_crt_credentials_provider(),
        use_ssl=endpoint.startswith("https://"),
    )
    serializer = BotocoreCRTRequestSerializer(
        botocore.session.get_session(),
        {
            "region_name": region,
            "endpoint_url": endpoint,
            "config": Config(s3={"addressing_style": "path"}),
        },
    )
    return CRTTransferManager(client, serializer)


def main() -> int:
    src, dest, mode = sys.argv[1:4]
    bucket, _, prefix = src.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    s3 = boto3.client(
        "s3", config=Config(s3={"addressing_style": "path"}, max_pool_connections=32)
    )
    objects = [
        item
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        )
        for item in page.get("Contents", [])
    ]
    config = TransferConfig(preferred_transfer_client="classic")

    def target(item: dict[str, str]) -> str:
        path = os.path.join(dest, item["Key"][len(prefix) :])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def fetch(item: dict[str, str]) -> None:
        s3.download_file(bucket, item["Key"], target(item), Config=config)

    if mode == "crt":
        with crt_manager(s3) as manager:
            for item in objects:  # as download_file: one object after another
                manager.download(bucket, item["Key"], target(item)).result()
    elif mode == "threads":
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(fetch, objects))
    else:
        for item in objects:
            fetch(item)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
