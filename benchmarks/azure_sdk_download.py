"""Peer: azure-storage-blob's aio client, called the way KServe's initializer calls it.

python azure_sdk_download.py CONTAINER PREFIX DEST   (AZURE_STORAGE_CONNECTION_STRING)

KServe's `_download_azure_blob` cannot be pointed at Azurite (it derives the account
URL from a ``*.blob.core.windows.net`` host), so this repeats its calls with the same
SDK: list the prefix, then per blob ``download_blob(max_concurrency=4)`` and write
``chunks()`` to the file, four blobs at a time (AZURE_MAX_FILE_CONCURRENCY).
"""

import asyncio
import os
import sys

from azure.storage.blob.aio import BlobServiceClient


async def main(container: str, prefix: str, dest: str) -> None:
    conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    limit = asyncio.Semaphore(4)
    async with BlobServiceClient.from_connection_string(conn) as service:
        client = service.get_container_client(container)

        async def one(name: str) -> None:
            async with limit:
                rel = name.replace(prefix, "", 1).lstrip("/") or os.path.basename(name)
                path = os.path.join(dest, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                stream = await client.download_blob(name, max_concurrency=4)
                with open(path, "wb") as f:
                    async for chunk in stream.chunks():
                        f.write(chunk)

        names = [b.name async for b in client.list_blobs(name_starts_with=prefix)]
        await asyncio.gather(*(one(n) for n in names))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
