from __future__ import annotations

import os
import sys
import zlib

import pytest
from awscrt import checksums
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_init import _crc
from storage_init._crc import CRC_ALGORITHMS, crc_algorithm
from storage_init._native import library
from storage_init.errors import BackendUnavailableError

#: The reference implementations: awscrt's (what botocore uses) and zlib's.
REFERENCE = {
    "crc64nvme": checksums.crc64nvme,
    "crc32c": checksums.crc32c,
    "crc32": zlib.crc32,
}
#: The catalogue's check values: the CRC of b"123456789".
CHECK = {"crc64nvme": 0xAE8B14860A799888, "crc32c": 0xE3069283, "crc32": 0xCBF43926}
#: Around the folding path's edges: 256 bytes and up fold, 128-byte strides, 16-byte
#: blocks, then a tail.
LENGTHS = [0, 1, 15, 16, 17, 127, 128, 255, 256, 257, 271, 383, 384, 1000, 4096 + 7]
#: `crc_limit`'s highest level (VPCLMULQDQ on 512-bit registers): back to the
#: best the CPU has.
BEST = 3


def _cpu_flags() -> set[str]:
    """This CPU's feature flags, as Linux lists them."""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.fixture(autouse=True)
def _fresh_algorithms():
    crc_algorithm.cache_clear()
    yield
    crc_algorithm.cache_clear()


class TestNativeCrc:
    def test_built_and_folding(self) -> None:
        """The library is built and uses the widest carry-less multiplication
        this CPU has (/proc/cpuinfo's flags)."""
        native = library()
        assert native is not None
        flags = _cpu_flags()
        expected = 1
        if {"vpclmulqdq", "avx2"} <= flags:
            expected = 3 if "avx512f" in flags else 2
        assert native.crc_folds() == expected

    def test_native_is_chosen(self) -> None:
        """With the library, the package's own code computes every CRC."""
        for name in CRC_ALGORITHMS:
            assert crc_algorithm(name).update.__qualname__.startswith(
                "_native_algorithm"
            )

    @pytest.mark.parametrize("name", CRC_ALGORITHMS)
    def test_check_values(self, name: str) -> None:
        """The catalogue's check value for each CRC."""
        assert crc_algorithm(name).update(b"123456789", 0) == CHECK[name]

    @pytest.mark.parametrize("name", CRC_ALGORITHMS)
    def test_lengths_and_buffers(self, name: str) -> None:
        """Every length around the folding edges, continued from a previous CRC,
        from bytes, a writable view and a read-only slice, as the references."""
        crc = crc_algorithm(name)
        ref = REFERENCE[name]
        data = os.urandom(5000)
        for n in LENGTHS:
            previous = ref(data[n : n + 9], 0)
            want = ref(data[:n], previous)
            assert crc.update(data[:n], previous) == want, n
            assert crc.update(memoryview(bytearray(data))[:n], previous) == want, n
            assert crc.update(memoryview(data)[:n], previous) == want, n

    @pytest.mark.parametrize("name", CRC_ALGORITHMS)
    @given(a=st.binary(max_size=3000), b=st.binary(max_size=3000))
    @settings(max_examples=40, deadline=None)
    def test_update_and_combine(self, name: str, a: bytes, b: bytes) -> None:
        """Chunked updates and combination both give the CRC of a || b."""
        crc = crc_algorithm(name)
        whole = REFERENCE[name](a + b, 0)
        assert crc.update(b, crc.update(a, 0)) == whole
        assert crc.combine(crc.update(a, 0), crc.update(b, 0), len(b)) == whole

    def test_large(self) -> None:
        """Megabytes (the folding loop's steady state) match the references."""
        data = os.urandom(3 * 1024 * 1024 + 333)
        for name in CRC_ALGORITHMS:
            assert crc_algorithm(name).update(data, 0) == REFERENCE[name](data, 0)

    def test_fallback_without_library(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the library, awscrt and zlib compute the same values."""
        monkeypatch.setattr(_crc, "library_holding_gil", lambda: None)
        crc = crc_algorithm("crc64nvme")
        assert crc.update is checksums.crc64nvme
        assert crc_algorithm("crc32").update is zlib.crc32
        assert crc.update(b"123456789", 0) == CHECK["crc64nvme"]


def test_neither_library_nor_awscrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no way to compute a CRC, the error names the extra that brings one."""
    monkeypatch.setattr(_crc, "library_holding_gil", lambda: None)
    monkeypatch.setitem(sys.modules, "awscrt", None)
    with pytest.raises(BackendUnavailableError, match=r"storage-init\[crc\]"):
        crc_algorithm("crc32c")


def test_table_when_awscrt_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU without folding and without awscrt, the library's table serves."""
    native = library()
    assert native is not None
    monkeypatch.setitem(sys.modules, "awscrt", None)
    native.crc_limit(0)
    try:
        crc = crc_algorithm("crc64nvme")
        assert crc.update(b"123456789", 0) == CHECK["crc64nvme"]
    finally:
        native.crc_limit(BEST)


@pytest.mark.parametrize("level", [0, 1, 2], ids=["table", "pclmul", "vpclmul-256"])
def test_slower_paths(level: int) -> None:
    """The table, the 128-bit PCLMULQDQ folding and the 256-bit VPCLMULQDQ one
    (what CPUs without VPCLMULQDQ, and those without AVX-512, run) give the
    references' values too. A CPU without a path runs the best it has."""
    native = library()
    assert native is not None
    best = native.crc_folds()
    assert native.crc_limit(level) == min(level, best)
    try:
        data = os.urandom(100_000)
        for name in CRC_ALGORITHMS:
            crc = _crc._native_algorithm(native, name)
            for n in [*LENGTHS, len(data)]:
                assert crc.update(data[:n], 5) == REFERENCE[name](data[:n], 5), n
    finally:
        native.crc_limit(BEST)
