"""Throughput of the package's C kernels against what they replace.

    .venv/bin/python -m benchmarks.kernels [--mib 256] [--runs 5] [--out DIR]

- MD5 of 16 spans of a file (multipart parts), mapped from the page cache and
  hashed by `_md5lanes.md5_spans`, for each x86-64 variant the loader
  picks from (each built alone with gcc, as the tests do), against hashlib over
  the same bytes in memory.
- CRC-64/NVME, CRC-32C and CRC-32 over bytes in memory, for each path of
  `_crcfold.c` (VPCLMULQDQ at 512 and 256 bits, PCLMULQDQ, table; via
  ``crc_limit``), against awscrt and zlib; and CRC-64/NVME per path over 256 KiB
  chunks already in the cache, as the receive loop hands them over (the
  in-memory rows are bound by memory bandwidth first).

Best of `--runs`, in GiB/s. Writes ``kernels.md`` to `--out` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from storage_init import _md5lanes
from storage_init._crc import _native_algorithm
from storage_init._md5lanes import _Kernel, md5_spans
from storage_init._native import library
from storage_init.config import TransferConfig

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "sse2": ["-mno-avx", "-mno-avx2", "-mno-avx512f"],
    "avx2": ["-mavx2", "-mno-avx512f"],
    "avx512": ["-mavx512f"],
}
CRC_LEVELS = {
    3: "VPCLMULQDQ 512-bit",
    2: "VPCLMULQDQ 256-bit",
    1: "PCLMULQDQ",
    0: "table",
}


def best(fn: Callable[[], object], runs: int, size: int) -> float:
    """The best of `runs` calls of `fn`, as GiB/s over `size` bytes."""
    fn()
    seconds = min(_timed(fn) for _ in range(runs))
    return size / seconds / 2**30


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def md5_rows(work: Path, size: int, runs: int) -> list[tuple[str, float]]:
    data = os.urandom(size)
    path = work / "parts"
    path.write_bytes(data)
    part = size // 16
    parts = [(i * part, part) for i in range(16)]
    source = Path(_md5lanes.__file__).with_name("_md5x16.c")
    flags = ["-O3", "-fPIC", "-shared", "-nostdlib", "-Wno-psabi", "-DMD5X16_NO_CLONES"]
    cpu = Path("/proc/cpuinfo").read_text()
    rows = []
    fd = os.open(path, os.O_RDONLY)
    spans = [(fd, offset, length) for offset, length in parts]
    try:
        for name, extra in VARIANTS.items():
            if name == "avx512" and "avx512f" not in cpu:
                continue
            built = work / f"md5-{name}.so"
            subprocess.run(
                ["gcc", *flags, *extra, "-o", str(built), str(source)], check=True
            )
            kernel = _Kernel(ctypes.CDLL(str(built)))
            hash_parts = functools.partial(md5_spans, spans, kernel=kernel)
            speed = best(hash_parts, runs, size)
            rows.append((f"MD5 x16 lanes, {name}, from the page cache", speed))
            # Lanes 8-15 idle: md5x8, half the vectors stepped.
            hash_half = functools.partial(md5_spans, spans[:8], kernel=kernel)
            speed = best(hash_half, runs, size // 2)
            rows.append((f"MD5 x8 lanes, {name}, from the page cache", speed))
    finally:
        os.close(fd)
    speed = best(
        lambda: [hashlib.md5(data[o : o + n], usedforsecurity=False) for o, n in parts],
        runs,
        size,
    )
    rows.append(("MD5, hashlib (OpenSSL), in memory", speed))
    return rows


def crc_rows(size: int, runs: int) -> list[tuple[str, float]]:
    native = library()
    assert native is not None, "the library is not built"
    data = os.urandom(size)
    rows = []
    try:
        for level, label in CRC_LEVELS.items():
            if native.crc_limit(level) != level:
                continue
            for name in ("crc64nvme", "crc32c", "crc32"):
                crc = _native_algorithm(native, name)
                speed = best(functools.partial(crc.update, data, 0), runs, size)
                rows.append((f"{name}, storage-init {label}", speed))
            crc = _native_algorithm(native, "crc64nvme")
            speed = best(functools.partial(_in_cache, crc.update, size), runs, size)
            what = f"crc64nvme, storage-init {label}, {_CHUNK // 1024} KiB in cache"
            rows.append((what, speed))
    finally:
        native.crc_limit(max(CRC_LEVELS))  # back to the best the CPU has
    from awscrt import checksums

    for name, fn in (
        ("crc64nvme", checksums.crc64nvme),
        ("crc32c", checksums.crc32c),
        ("crc32", checksums.crc32),
    ):
        speed = best(functools.partial(fn, data, 0), runs, size)
        rows.append((f"{name}, awscrt", speed))
    rows.append(("crc32, zlib", best(lambda: zlib.crc32(data), runs, size)))
    return rows


#: The receive loop's chunk (the default `TransferConfig.chunk_size`): each is
#: CRC'd right after it came in, from the cache, not from memory as the
#: whole-buffer rows are.
_CHUNK = TransferConfig().chunk_size


def _in_cache(update: Callable[[bytes, int], int], size: int) -> int:
    """CRC `size` bytes as one chunk's worth, over and over (it stays cached)."""
    chunk = b"\x5a" * _CHUNK
    crc = 0
    for _ in range(size // len(chunk)):
        crc = update(chunk, crc)
    return crc


def _cpu() -> str:
    """The CPU's model name and the vector features the kernels choose by."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines()
         if line.startswith("model name")),
        os.uname().machine,
    )  # fmt: skip
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    have = [
        f for f in ("avx2", "avx512f", "vpclmulqdq", "sha_ni") if f in flags.split()
    ]
    return f"{model} ({', '.join(have) or 'none of AVX2, AVX-512, VPCLMULQDQ'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="bytes per measurement")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args()
    size = args.mib * 2**20
    with tempfile.TemporaryDirectory(prefix="kernels-") as work:
        rows = md5_rows(Path(work), size, args.runs) + crc_rows(size, args.runs)
    lines = [
        f"Kernels, {args.mib} MiB per measurement, best of {args.runs}, GiB/s.",
        f"CPU: {_cpu()}.",
        "",
        "| what | GiB/s |",
        "|---|---|",
        *(f"| {what} | {speed:.2f} |" for what, speed in rows),
    ]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
