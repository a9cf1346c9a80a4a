"""CPU to CRC files back from the page cache, as a splice-then-CRC path would.

    .venv/bin/python -m benchmarks.readback FILE... [--runs 2]

A CRC'd body is received through user space because the CRC must see its bytes;
an MD5-checked one goes from the socket to the file by splice(2). Splicing a CRC'd
body too would save its receive copy, but its bytes would then have to be read back
from the page cache for the CRC. This prints what that read-back costs: the
process's user and system CPU seconds to CRC-64/NVME the files (each read first,
untimed, so it is cached) in preads of the receive loop's chunk, and through
one read-only map per file. Set it against the CPU a run saves by splicing (by hand:
`benchmarks.alternate URL storage-init,storage-init:STORAGE_INIT_VERIFY=size`).
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
from collections.abc import Callable
from pathlib import Path

from storage_init._crc import crc_algorithm
from storage_init.config import TransferConfig

#: The receive loop's chunk (the default `TransferConfig.chunk_size`).
CHUNK = TransferConfig().chunk_size

Update = Callable[[bytes | memoryview, int], int]


def by_pread(path: Path, update: Update) -> int:
    """CRC `path` read in `CHUNK`-byte preads."""
    crc = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while chunk := os.pread(fd, CHUNK, offset):
            crc = update(chunk, crc)
            offset += len(chunk)
    finally:
        os.close(fd)
    return crc


def by_map(path: Path, update: Update) -> int:
    """CRC `path` through one read-only map, `CHUNK` bytes per call."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as m:
        view = memoryview(m)
        try:
            crc = 0
            for offset in range(0, len(m), CHUNK):
                crc = update(view[offset : offset + CHUNK], crc)
            return crc
        finally:
            view.release()


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    update = crc_algorithm("crc64nvme").update
    for path in args.files:
        by_pread(path, update)  # into the page cache, untimed
    size = sum(p.stat().st_size for p in args.files)
    crcs = set()
    for name, way in (("pread", by_pread), ("mmap", by_map)):
        for _ in range(args.runs):
            before = _cpu()
            crcs.add(tuple(way(p, update) for p in args.files))
            after = _cpu()
            user, system = after[0] - before[0], after[1] - before[1]
            print(
                f"{name:5} {size / 2**30:.2f} GiB  user {user:.2f} s  "
                f"system {system:.2f} s  total {user + system:.2f} s"
            )
    assert len(crcs) == 1, "the two ways disagree"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
