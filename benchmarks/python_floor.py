"""The least a Python process can do per small file: the floor storage-init sits on.

    python -m benchmarks.python_floor s3://bucket/prefix DEST [--threads 64]
        [--extra-calls N]

Lists the prefix (botocore), then `--threads` threads each keep one connection and,
per object: sign the GET (storage-init's SigV4), send it, read the head and the body
(Content-Length framing), write a temp file and rename it. No verification, no
manifest, no retries, no resume: a yardstick, not a tool. `--extra-calls` adds that
many `os.fstat` calls per file, each releasing and retaking the GIL, to see what
more hand-offs cost. Endpoint and keys come from the AWS_* variables. Time it
against storage-init with `/usr/bin/time`, each run into a new directory
(`benchmarks.measure.fresh_dest`: on ext4 without a journal a directory just
emptied makes every new file cost more), and mind that the listing imports
botocore (~0.3 s of CPU that storage-init does not spend).
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
from urllib.parse import urlsplit

import botocore.session

from storage_init.backends._sigv4 import Credentials, sign_request


def _keys(bucket: str, prefix: str, endpoint: str) -> list[str]:
    client = botocore.session.get_session().create_client("s3", endpoint_url=endpoint)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]
    finally:
        client.close()


def _get(sock: socket.socket, request: bytes, buffer: memoryview) -> bytes:
    """Send `request`; return the body (Content-Length framing only)."""
    sock.sendall(request)
    got = b""
    while b"\r\n\r\n" not in got:
        more = sock.recv(65536)
        if not more:
            msg = "closed before the head"
            raise ConnectionError(msg)
        got += more
    head, body = got.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    parts = [body]
    left = length - len(body)
    while left:
        n = sock.recv_into(buffer[: min(left, len(buffer))])
        if not n:
            msg = "closed mid-body"
            raise ConnectionError(msg)
        parts.append(bytes(buffer[:n]))
        left -= n
    return b"".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("dest")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--extra-calls", type=int, default=0)
    args = parser.parse_args()
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    host = urlsplit(endpoint)
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    keys = Credentials(
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    )
    bucket, _, prefix = args.source.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    todo = _keys(bucket, prefix, endpoint)
    lock = threading.Lock()
    errors: list[OSError] = []

    def worker() -> None:
        buffer = memoryview(bytearray(1 << 20))
        with socket.create_connection((host.hostname, host.port or 80)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                with lock:
                    if not todo or errors:
                        return
                    key = todo.pop()
                url = f"{endpoint}/{bucket}/{key}"
                lines = [f"GET /{bucket}/{key} HTTP/1.1", f"Host: {host.netloc}"]
                signed = sign_request("GET", url, region, keys)
                lines += [f"{name}: {value}" for name, value in signed.items()]
                request = ("\r\n".join(lines) + "\r\n\r\n").encode()
                try:
                    body = _get(sock, request, buffer)
                except OSError as exc:  # ConnectionError too
                    errors.append(exc)
                    return
                final = os.path.join(args.dest, key[len(prefix) :])
                temp = f"{final}.partial"
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.pwrite(fd, body, 0)
                os.close(fd)
                os.rename(temp, final)
                for _ in range(args.extra_calls):
                    os.fstat(0)

    os.makedirs(args.dest, exist_ok=True)
    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
