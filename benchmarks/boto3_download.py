"""Peer: download an S3 prefix with boto3, run in the peer's own virtualenv.

    python boto3_download.py s3://bucket/prefix DEST default|crt|threads

- ``default``: what most scripts do: ``download_file`` per object, one after another
  (s3transfer splits each large object into parallel ranges itself);
- ``crt``: the same with the CRT transfer client (``preferred_transfer_client``);
- ``threads``: s3transfer's documented tuning for many objects: eight objects at once.
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


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
    config = TransferConfig(
        preferred_transfer_client="crt" if mode == "crt" else "classic"
    )

    def fetch(item: dict[str, str]) -> None:
        path = os.path.join(dest, item["Key"][len(prefix) :])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, item["Key"], path, Config=config)

    if mode == "threads":
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(fetch, objects))
    else:
        for item in objects:
            fetch(item)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
