from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_init import _md5lanes
from storage_init._md5lanes import HALF, STEP, _Kernel, available, md5_spans
from storage_init._native import library
from storage_init.errors import IntegrityError

#: Lengths around every boundary the padding and the steps (`STEP`) have.
EDGES = [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, STEP - 1, STEP, STEP + 1]


def _file(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "data"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def _expected(data: bytes, spans: list[tuple[int, int]]) -> list[bytes]:
    return [hashlib.md5(data[o : o + n]).digest() for o, n in spans]


def _in(fd: int, spans: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """`spans` of one file, as `md5_spans` takes them."""
    return [(fd, offset, length) for offset, length in spans]


class TestKernel:
    def test_built(self) -> None:
        """The kernel is built and loads (bootstrap installs a C compiler)."""
        assert available(), f"{_md5lanes.LIBRARY} missing or not loadable"

    def test_edges(self, tmp_path: Path) -> None:
        """Every length at a padding or step boundary hashes as hashlib does."""
        data = os.urandom(3 * STEP)
        spans = [(i * 7, n) for i, n in enumerate(EDGES)]
        fd = _file(tmp_path, data)
        try:
            assert md5_spans(_in(fd, spans)) == _expected(data, spans)
        finally:
            os.close(fd)

    def test_half_of_the_lanes(self, tmp_path: Path) -> None:
        """Up to `HALF` spans (lanes 8-15 idle: md5x8) hash as hashlib does."""
        data = os.urandom(3 * STEP)
        for count in (1, HALF):
            spans = [(i * 7, n) for i, n in enumerate(EDGES[-count:])]
            fd = _file(tmp_path, data)
            try:
                assert md5_spans(_in(fd, spans)) == _expected(data, spans)
            finally:
                os.close(fd)

    def test_more_spans_than_lanes(self, tmp_path: Path) -> None:
        """Lanes are refilled as spans finish, in any order; results keep theirs."""
        data = os.urandom(4 * STEP)
        # 40 spans of mixed lengths: lanes finish at different steps.
        spans = [((i * 4099) % STEP, (i * 9973) % (3 * STEP)) for i in range(40)]
        fd = _file(tmp_path, data)
        try:
            assert md5_spans(_in(fd, spans)) == _expected(data, spans)
        finally:
            os.close(fd)

    @given(
        data=st.binary(min_size=1, max_size=3000),
        cuts=st.lists(
            st.tuples(st.integers(0, 3000), st.integers(0, 3000)), max_size=20
        ),
    )
    @settings(max_examples=60, deadline=None)
    def test_matches_hashlib(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        data: bytes,
        cuts: list[tuple[int, int]],
    ) -> None:
        """Any spans inside the file, overlapping or not, hash as hashlib does."""
        spans = [(a % len(data), n) for a, n in cuts]
        spans = [(o, min(n, len(data) - o)) for o, n in spans]
        fd = _file(tmp_path_factory.mktemp("h"), data)
        try:
            assert md5_spans(_in(fd, spans)) == _expected(data, spans)
        finally:
            os.close(fd)

    def test_many_files(self, tmp_path: Path) -> None:
        """Each lane reads its own file: 40 files of mixed sizes, one span each."""
        files = [os.urandom((i * 7919) % (STEP + 300)) for i in range(40)]
        fds = []
        try:
            for i, data in enumerate(files):
                path = tmp_path / f"f{i}"
                path.write_bytes(data)
                fds.append(os.open(path, os.O_RDONLY))
            spans = [(fd, 0, len(data)) for fd, data in zip(fds, files, strict=True)]
            expected = [hashlib.md5(data).digest() for data in files]
            assert md5_spans(spans) == expected
            # ... and spans of several files mixed with spans of one.
            mixed = [spans[3], (fds[5], 10, 100), spans[3], (fds[0], 0, 0)]
            assert md5_spans(mixed) == [
                expected[3],
                hashlib.md5(files[5][10:110]).digest(),
                expected[3],
                hashlib.md5(b"").digest(),
            ]
        finally:
            for fd in fds:
                os.close(fd)

    def test_no_spans(self) -> None:
        """No spans, no digests."""
        assert md5_spans([]) == []

    def test_short_file(self, tmp_path: Path) -> None:
        """A span past the end of the file is an IntegrityError, not a digest."""
        fd = _file(tmp_path, b"x" * 100)
        try:
            with pytest.raises(
                IntegrityError, match="shorter than expected at byte 100"
            ):
                md5_spans(_in(fd, [(0, 10), (50, 51)]))
        finally:
            os.close(fd)

    def test_unmappable_file_is_read_instead(self, tmp_path: Path) -> None:
        """Where the file cannot be mapped, hashlib computes the same digests."""
        native = library()
        assert native is not None
        kernel = _Kernel(native)
        calls = []

        def refuse(*args: object) -> int:
            calls.append(args)
            return 2**64 - 1  # MAP_FAILED

        mmap_type = ctypes.CFUNCTYPE(
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        )
        failing = mmap_type(refuse)
        kernel.mapper.mmap = ctypes.cast(failing, ctypes.c_void_p).value
        data = os.urandom(3 * STEP)
        spans = [(i * 7, n) for i, n in enumerate(EDGES)]
        fd = _file(tmp_path, data)
        try:
            assert md5_spans(_in(fd, spans), kernel=kernel) == _expected(data, spans)
        finally:
            os.close(fd)
        assert calls

    def test_unavailable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the kernel, md5_spans says so instead of computing wrong digests."""
        monkeypatch.setattr(_md5lanes, "_kernel", lambda: None)
        assert not _md5lanes.available()
        with pytest.raises(RuntimeError, match="not built"):
            md5_spans([(0, 0, 1)])


#: Each x86-64 variant the loader picks from (`md5x16_pick`), built alone: this
#: machine's CPU runs only the best one in the package's build.
VARIANTS = {
    "sse2": ["-mno-avx", "-mno-avx2", "-mno-avx512f"],
    "avx2": ["-mavx2", "-mno-avx512f"],
    "avx512": ["-mavx512f"],
    # Each wider body's source run where its instructions are not: GCC splits
    # its vectors (the AVX-512 one cannot run on this CI machine otherwise).
    "avx512-body-on-avx2": ["-mavx2", "-mno-avx512f", "-DMD5X16_WIDTH=16"],
    "avx2-body-on-sse2": ["-mno-avx", "-mno-avx2", "-mno-avx512f", "-DMD5X16_WIDTH=8"],
}


@pytest.mark.skipif(
    shutil.which("gcc") is None or os.uname().machine != "x86_64",
    reason="needs gcc on x86-64",
)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cpu_variants(tmp_path: Path, variant: str) -> None:
    """Every x86-64 variant of the kernel builds, and hashes as hashlib does."""
    library = tmp_path / f"{variant}.so"
    source = Path(_md5lanes.__file__).with_name("_md5x16.c")
    flags = ["-O3", "-fPIC", "-shared", "-nostdlib", "-Wno-psabi", "-DMD5X16_NO_CLONES"]
    subprocess.run(
        ["gcc", *flags, *VARIANTS[variant], "-o", str(library), str(source)],
        check=True,
    )
    if variant == "avx512" and "avx512f" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("built; this CPU has no AVX-512 to run it")
    kernel = _Kernel(ctypes.CDLL(str(library)))
    data = os.urandom(2 * STEP + 999)
    spans = [(i * 13, n) for i, n in enumerate(EDGES)] * 2
    fd = _file(tmp_path, data)
    try:
        assert md5_spans(_in(fd, spans), kernel=kernel) == _expected(data, spans)
        # Lanes 8-15 idle: md5x8, the half of the vectors.
        few = spans[-HALF:]
        assert md5_spans(_in(fd, few), kernel=kernel) == _expected(data, few)
    finally:
        os.close(fd)


#: Cross-compiler and emulator for the NEON variant (scripts/bootstrap.sh
#: installs them on x86-64).
CROSS_GCC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"


@pytest.mark.skipif(
    shutil.which(CROSS_GCC) is None or shutil.which(QEMU) is None,
    reason=f"needs {CROSS_GCC} and {QEMU}",
)
def test_aarch64_neon(tmp_path: Path) -> None:
    """The aarch64 build (NEON, 4-word vectors) hashes as hashlib does, under qemu.

    Arm nodes run the image too; this machine cannot, so the kernel is
    cross-compiled into a driver that prints each span's digest.
    """
    source = Path(_md5lanes.__file__).with_name("_md5x16.c")
    driver = tmp_path / "driver"
    subprocess.run(
        [CROSS_GCC, "-O3", "-static", "-Wall", "-Werror", "-Wno-psabi",
         "-I", str(source.parent), "-o", str(driver),
         str(Path(__file__).with_name("md5x16_driver.c"))],
        check=True,
    )  # fmt: skip
    data = os.urandom(3 * 4096 + 999)
    lengths = [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 4095, 4096, 4097, 9000]
    spans = [(i * 97, n) for i, n in enumerate(lengths)] * 2  # 30: two calls' worth
    spans += spans[:5]  # and a call of lanes 0-4 only: md5x8's half of the vectors
    path = tmp_path / "data"
    path.write_bytes(data)
    args = [str(x) for span in spans for x in span]
    done = subprocess.run(
        [QEMU, str(driver), str(path), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.split()
    assert out == [d.hex() for d in _expected(data, spans)]
