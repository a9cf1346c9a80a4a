from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_init._crc import CRC_ALGORITHMS, crc_algorithm
from storage_init._md5lanes import md5_spans
from storage_init._plan import plan_ranges
from storage_init.backends.memory import MemoryBackend
from storage_init.errors import IntegrityError
from storage_init.models import ObjectInfo, VerifyMode
from storage_init.verify import FileDigest, choose_check


def _info(**kwargs: object) -> ObjectInfo:
    base: dict[str, object] = {"key": "k", "size": 10}
    base.update(kwargs)
    if "checksums" in base:
        base["checksums"] = MappingProxyType(dict(base["checksums"]))  # type: ignore[call-overload]
    return ObjectInfo(**base)  # type: ignore[arg-type]


class TestCrcCombine:
    @pytest.mark.parametrize("name", CRC_ALGORITHMS)
    @given(a=st.binary(max_size=3000), b=st.binary(max_size=3000))
    @settings(max_examples=50)
    def test_combine_equals_concatenation(self, name: str, a: bytes, b: bytes) -> None:
        """combine(crc(a), crc(b), len(b)) is the CRC of a || b."""
        crc = crc_algorithm(name)
        combined = crc.combine(crc.update(a, 0), crc.update(b, 0), len(b))
        assert combined == crc.update(a + b, 0)

    def test_known_values(self) -> None:
        """Encodings match what S3 returns for the same bytes."""
        assert crc_algorithm("crc32").encode(crc_algorithm("crc32").update(b"", 0)) == (
            "AAAAAA=="
        )
        value = crc_algorithm("crc32c").update(b"123456789", 0)
        assert value == 0xE3069283  # the CRC-32C check value


class TestChooseCheck:
    def test_prefers_full_crc64(self) -> None:
        """A full-object CRC64NVME wins over CRC32C and the ETag."""
        info = _info(
            etag="0" * 32, checksums={"crc32c": "AAAAAA==", "crc64nvme": "AAAAAAAAAAA="}
        )
        assert choose_check(info, VerifyMode.AUTO).label == "crc64nvme"

    def test_composite_needs_parts(self) -> None:
        """A composite CRC is checked over part-aligned ranges."""
        info = _info(checksums={"crc32c": "abcd-3"}, checksum_type="COMPOSITE")
        check = choose_check(info, VerifyMode.AUTO)
        assert check.label == "crc32c-composite"
        assert check.needs_parts
        assert check.parts_count == 3

    def test_multipart_etag(self) -> None:
        """An md5-N ETag is checked part by part."""
        check = choose_check(_info(etag="a" * 32 + "-7"), VerifyMode.AUTO)
        assert (check.label, check.needs_parts, check.parts_count) == (
            "multipart-etag",
            True,
            7,
        )

    def test_kms_etag_is_not_md5(self) -> None:
        """Under SSE-KMS the ETag is opaque: only the size is checked."""
        check = choose_check(_info(etag="a" * 32, etag_is_md5=False), VerifyMode.AUTO)
        assert check.label == "size"
        assert not check.verifies_content

    def test_strict_adds_sha256(self) -> None:
        """Strict mode adds the stored SHA-256."""
        info = _info(checksums={"crc32": "AAAAAA==", "sha256": "x"})
        check = choose_check(info, VerifyMode.STRICT)
        assert check.label == "crc32+sha256"
        assert check.whole == ("sha256",)

    def test_prefers_sha256_to_md5(self) -> None:
        """A stored SHA-256 wins over an MD5 ETag: cheaper here, and stronger."""
        info = _info(etag="a" * 32, checksums={"sha256": "x"})
        assert choose_check(info, VerifyMode.AUTO).label == "sha256"
        assert choose_check(info, VerifyMode.STRICT).whole == ("sha256",)

    def test_content_md5(self) -> None:
        """An MD5 stated by the server (hex) is checked when nothing better exists."""
        info = _info(etag="opaque", etag_is_md5=False, checksums={"md5": "b" * 32})
        assert choose_check(info, VerifyMode.AUTO).label == "content-md5"

    def test_strict_without_checksum_fails(self) -> None:
        """Strict mode refuses objects with no checksum at all."""
        with pytest.raises(IntegrityError, match="no checksum"):
            choose_check(_info(etag="opaque"), VerifyMode.STRICT)

    @pytest.mark.parametrize("mode", [VerifyMode.SIZE, VerifyMode.OFF])
    def test_size_and_off(self, mode: VerifyMode) -> None:
        """size and off compute no digest."""
        check = choose_check(_info(etag="a" * 32), mode)
        assert not check.verifies_content


def _digest_of(
    data: bytes, info: ObjectInfo, part_size: int, parts: list[int] | None, tmp_path
) -> FileDigest:
    """Compute a FileDigest as the engine does: CRCs inline, the rest from the file."""
    mode = VerifyMode.STRICT if "sha256" in info.checksums else VerifyMode.AUTO
    check = choose_check(info, mode)
    ranges = plan_ranges(len(data), part_size, parts)
    digest = FileDigest(check, ranges)
    # Feed each range in small, uneven chunks, as a network would.
    for r, rd in zip(ranges, digest.ranges, strict=True):
        pos = r.start
        step = 7
        while pos < r.end:
            rd.update(data[pos : min(pos + step, r.end)])
            pos += step
            step = step * 3 % 1001 + 1
    _hash_from_file(digest, data, tmp_path)
    return digest


def _hash_from_file(digest: FileDigest, data: bytes, tmp_path) -> None:
    """Write `data` to a file and feed every range back from it, in order."""
    path = tmp_path / "written"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for index in range(len(digest.byte_ranges)):
            digest.hash_written_range(fd, index, 1000)
    finally:
        os.close(fd)


class TestFileDigest:
    @pytest.mark.parametrize(
        ("checksum", "composite", "upload_part"),
        [
            pytest.param("crc64nvme", False, None, id="crc64-single"),
            pytest.param("crc32c", False, 3000, id="crc32c-full-multipart"),
            pytest.param("crc32c", True, 3000, id="crc32c-composite"),
            pytest.param("crc32", True, 2500, id="crc32-composite"),
            pytest.param(None, False, 3000, id="multipart-etag"),
        ],
    )
    @pytest.mark.parametrize("range_size", [1000, 4096, 100_000])
    def test_matches_store(
        self,
        tmp_path,
        checksum: str | None,
        composite: bool,
        upload_part: int | None,
        range_size: int,
    ) -> None:
        """Digests computed over ranges match what the store computed on upload."""
        data = os.urandom(20_000)
        store = MemoryBackend()
        info = store.put(
            "b",
            "k",
            data,
            part_size=upload_part,
            checksum=checksum,
            composite=composite,
        )
        check = choose_check(info, VerifyMode.AUTO)
        parts: list[int] | None = None
        if check.needs_parts:
            assert upload_part is not None
            parts = [upload_part] * (len(data) // upload_part)
            if len(data) % upload_part:
                parts.append(len(data) % upload_part)
        digest = _digest_of(data, info, range_size, parts, tmp_path)
        digest.verify(size=len(data), written=len(data))

    def test_detects_flipped_byte(self, tmp_path) -> None:
        """One flipped byte is a checksum mismatch."""
        data = bytearray(os.urandom(10_000))
        info = MemoryBackend().put("b", "k", bytes(data), checksum="crc64nvme")
        data[5000] ^= 1
        digest = _digest_of(bytes(data), info, 3000, None, tmp_path)
        with pytest.raises(IntegrityError, match="crc64nvme mismatch"):
            digest.verify(size=len(data), written=len(data))

    def test_detects_size_mismatch(self, tmp_path) -> None:
        """A short file fails the size check before any checksum."""
        info = MemoryBackend().put("b", "k", b"abc")
        digest = _digest_of(b"abc", info, 10, None, tmp_path)
        with pytest.raises(IntegrityError, match="size mismatch"):
            digest.verify(size=3, written=2)

    @pytest.mark.parametrize(
        ("upload_part", "label"), [(None, "md5-etag"), (3000, "multipart-etag")]
    )
    def test_inline_ordered_digests(self, upload_part, label) -> None:
        """A small one-range file gets its MD5s inline, without reading it back."""
        data = os.urandom(10_000)
        info = MemoryBackend().put("b", "k", data, part_size=upload_part)
        check = choose_check(info, VerifyMode.AUTO)
        parts = [3000, 3000, 3000, 1000] if upload_part else None
        ranges = plan_ranges(len(data), 1 << 20, parts)
        digest = FileDigest(check, ranges, inline_limit=1 << 20)
        assert (digest.inline, digest.deferred, check.label) == (True, False, label)
        for i in range(0, len(data), 777):
            digest.update(0, data[i : i + 777])
        digest.verify(size=len(data), written=len(data))

    def test_md5_and_sha256_across_ranges(self, tmp_path) -> None:
        """The MD5 ETag and SHA-256 are checked in order across many ranges."""
        data = os.urandom(50_000)
        store = MemoryBackend()
        store.put("b", "k", data)
        store.put_sha256("b", "k")
        info = store._buckets["b"]["k"].info
        digest = _digest_of(data, info, 10_000, None, tmp_path)
        assert digest.deferred
        assert digest.check.label == "sha256"
        digest.verify(size=len(data), written=len(data))
        assert (
            base64.b64encode(hashlib.sha256(data).digest()).decode()
            == (info.checksums["sha256"])
        )

    @pytest.mark.parametrize("threaded", [{0, 1, 2, 3}, {1, 3}], ids=["all", "some"])
    def test_part_md5s_in_worker_threads(self, tmp_path, threaded: set[int]) -> None:
        """Ranges written by worker threads get their part MD5s there, in any range
        order; the others are read back, and the multipart ETag matches."""
        data = bytearray(os.urandom(10_000))
        info = MemoryBackend().put("b", "k", bytes(data), part_size=3000)
        check = choose_check(info, VerifyMode.AUTO)
        ranges = plan_ranges(len(data), 3000, [3000, 3000, 3000, 1000])
        digest = FileDigest(check, ranges)
        assert (digest.deferred, check.label) == (True, "multipart-etag")
        for index in sorted(range(len(ranges)), reverse=True):  # out of order
            r = ranges[index]
            for pos in range(r.start, r.end, 512):
                piece = bytes(data[pos : min(pos + 512, r.end)])
                digest.update(index, piece, threaded=index in threaded)
        assert [digest.needs_readback(i) for i in range(4)] == [
            i not in threaded for i in range(4)
        ]
        _hash_from_file(digest, bytes(data), tmp_path)
        digest.verify(size=len(data), written=len(data))

    @pytest.mark.parametrize(
        ("checksum", "composite", "lanes"),
        [
            pytest.param("crc64nvme", False, False, id="crc64-full"),
            pytest.param("crc32c", True, False, id="crc32c-composite"),
            pytest.param(None, False, True, id="multipart-etag-lanes"),
        ],
    )
    def test_native_receive_matches(
        self, tmp_path, checksum: str | None, composite: bool, lanes: bool
    ) -> None:
        """Bytes CRC'd by native code (`native_crc`, `advance`) verify as `update`'s.

        Each run stops at its segment's end (`room`), as the engine's does.
        """
        data = os.urandom(20_000)
        info = MemoryBackend().put(
            "b", "k", data, part_size=3000, checksum=checksum, composite=composite
        )
        check = choose_check(info, VerifyMode.AUTO)
        parts = [3000] * 6 + [2000]
        ranges = plan_ranges(len(data), 7000, parts if check.needs_parts else None)
        digest = FileDigest(check, ranges, lanes=lanes)
        for index, r in enumerate(ranges):
            offset = r.start
            while offset < r.end:
                native = digest.native_crc(index)
                assert native is not None
                kind, crc = native
                room = digest.ranges[index].room or r.end - offset
                n = min(room, r.end - offset, 1234)
                if check.crc is not None:
                    assert kind == check.crc.native
                    crc = check.crc.update(data[offset : offset + n], crc)
                else:
                    assert kind == -1
                digest.advance(index, crc, n)
                offset += n
        _hash_from_file(digest, data, tmp_path)
        digest.verify(size=len(data), written=len(data))

    def test_native_receive_only_where_update_need_not_see_the_bytes(self) -> None:
        """Inline MD5s, part MD5s hashed as bytes arrive, and a CRC that is not
        the library's (awscrt) need `update`."""
        data = os.urandom(10_000)
        store = MemoryBackend()
        etag = choose_check(store.put("b", "k", data), VerifyMode.AUTO)
        one = plan_ranges(len(data), 1 << 20)
        assert FileDigest(etag, one, inline_limit=1 << 20).native_crc(0) is None
        multipart = choose_check(
            store.put("b", "m", data, part_size=3000), VerifyMode.AUTO
        )
        ranges = plan_ranges(len(data), 3000, [3000, 3000, 3000, 1000])
        assert FileDigest(multipart, ranges).native_crc(0) is None
        assert FileDigest(multipart, ranges, lanes=True).native_crc(0) == (-1, 0)
        crc = choose_check(store.put("b", "c", data, checksum="crc32"), VerifyMode.AUTO)
        assert crc.crc is not None
        if crc.crc.native is not None:
            assert FileDigest(crc, one).native_crc(0) == (crc.crc.native, 0)
        awscrt = crc._replace(crc=crc.crc._replace(native=None))
        assert FileDigest(awscrt, one).native_crc(0) is None

    def test_advance_stops_at_the_segment_end(self) -> None:
        data = os.urandom(6000)
        check = choose_check(
            MemoryBackend().put(
                "b", "k", data, part_size=3000, checksum="crc32c", composite=True
            ),
            VerifyMode.AUTO,
        )
        digest = FileDigest(check, plan_ranges(6000, 6000, [3000, 3000]))
        assert digest.ranges[0].room == 3000
        with pytest.raises(ValueError, match="segment"):
            digest.advance(0, 0, 3001)

    def test_part_md5s_in_worker_threads_see_corruption(self) -> None:
        """A flipped byte seen by a worker thread fails the multipart ETag."""
        data = bytearray(os.urandom(6000))
        info = MemoryBackend().put("b", "k", bytes(data), part_size=3000)
        check = choose_check(info, VerifyMode.AUTO)
        ranges = plan_ranges(len(data), 3000, [3000, 3000])
        digest = FileDigest(check, ranges)
        data[4000] ^= 1
        for index, r in enumerate(ranges):
            digest.update(index, bytes(data[r.start : r.end]), threaded=True)
        with pytest.raises(IntegrityError, match="multipart ETag mismatch"):
            digest.verify(size=len(data), written=len(data))


def _hash_parts(digest: FileDigest, fd: int, indices: Iterable[int]) -> None:
    """What the engine's part hasher does: the ranges' parts in one kernel call."""
    indices = list(indices)
    md5s = iter(md5_spans([s for i in indices for s in digest.part_spans(fd, i)]))
    for index in indices:
        parts = digest.byte_ranges[index].parts
        digest.adopt_part_md5s(index, [next(md5s) for _ in parts])


class TestLanes:
    def _digest(self, data: bytes, *, lanes: bool) -> FileDigest:
        info = MemoryBackend().put("b", "k", data, part_size=3000)
        check = choose_check(info, VerifyMode.AUTO)
        parts = [3000] * (len(data) // 3000) + [len(data) % 3000]
        ranges = plan_ranges(len(data), 6000, [p for p in parts if p])
        return FileDigest(check, ranges, lanes=lanes)

    def test_parts_hashed_in_batches(self, tmp_path) -> None:
        """With lanes, worker threads leave the part MD5s alone; batches of ranges
        in any order are hashed from the file, and the multipart ETag matches."""
        data = os.urandom(50_000)
        digest = self._digest(data, lanes=True)
        assert digest.lanes
        for index, r in enumerate(digest.byte_ranges):
            digest.update(index, data[r.start : r.end], threaded=True)
        assert all(digest.needs_readback(i) for i in range(len(digest.byte_ranges)))
        path = tmp_path / "written"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            _hash_parts(digest, fd, [6, 2, 8])
            _hash_parts(digest, fd, [0, 1, 3, 4, 5, 7])
        finally:
            os.close(fd)
        assert not any(digest.needs_readback(i) for i in range(9))
        digest.verify(size=len(data), written=len(data))

    def test_corruption_on_disk(self, tmp_path) -> None:
        """A byte that differs on disk fails the multipart ETag."""
        data = bytearray(os.urandom(20_000))
        digest = self._digest(bytes(data), lanes=True)
        data[12_345] ^= 1
        path = tmp_path / "written"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            _hash_parts(digest, fd, range(len(digest.byte_ranges)))
        finally:
            os.close(fd)
        with pytest.raises(IntegrityError, match="multipart ETag mismatch"):
            digest.verify(size=len(data), written=len(data))

    def test_not_for_other_checks(self) -> None:
        """Lanes are for part MD5s alone: not with a whole-file digest beside them
        (strict SHA-256), nor for a file hashed inline, nor when not offered."""
        data = os.urandom(10_000)
        store = MemoryBackend()
        store.put("b", "k", data, part_size=3000)
        store.put_sha256("b", "k")
        info = store._buckets["b"]["k"].info
        ranges = plan_ranges(len(data), 3000, [3000, 3000, 3000, 1000])
        strict = choose_check(info, VerifyMode.STRICT)
        plain = MemoryBackend().put("b", "k", data, part_size=3000)
        auto = choose_check(plain, VerifyMode.AUTO)
        assert "sha256" in strict.whole
        assert not FileDigest(strict, ranges, lanes=True).lanes
        one = plan_ranges(len(data), 1 << 20, [3000, 3000, 3000, 1000])
        assert not FileDigest(auto, one, inline_limit=1 << 20, lanes=True).lanes
        assert not FileDigest(auto, ranges, lanes=False).lanes
        assert FileDigest(auto, ranges, lanes=True).lanes


class TestAdoptedMd5:
    """A whole-file MD5 computed elsewhere (small files, 16 to a kernel call)."""

    def _digest(self, data: bytes) -> FileDigest:
        etag = hashlib.md5(data).hexdigest()
        check = choose_check(_info(size=len(data), etag=etag), VerifyMode.AUTO)
        assert check.label == "md5-etag"
        return FileDigest(check, plan_ranges(len(data), 1 << 20))

    def test_adopted_md5_is_compared(self) -> None:
        """The adopted MD5 verifies the file; another one fails it."""
        data = os.urandom(5000)
        good = self._digest(data)
        assert good.needs_md5_only
        good.adopt_md5(hashlib.md5(data).digest())
        assert not good.needs_readback(0)
        good.verify(size=len(data), written=len(data))
        bad = self._digest(data)
        bad.adopt_md5(hashlib.md5(data[1:]).digest())
        with pytest.raises(IntegrityError, match="MD5 ETag mismatch"):
            bad.verify(size=len(data), written=len(data))

    def test_only_where_an_md5_is_all_that_is_left(self) -> None:
        """Not with a CRC, a SHA-256 beside it (strict), part MD5s, or inline."""
        data = os.urandom(5000)
        ranges = plan_ranges(len(data), 1 << 20)
        md5 = hashlib.md5(data).hexdigest()
        checks = {
            "crc": _info(size=len(data), etag=md5, checksums={"crc32c": "AAAAAA=="}),
            "strict": _info(size=len(data), etag=md5, checksums={"sha256": "x"}),
            "parts": _info(size=len(data), etag=f"{md5}-2"),
        }
        for name, info in checks.items():
            mode = VerifyMode.STRICT if name == "strict" else VerifyMode.AUTO
            digest = FileDigest(choose_check(info, mode), ranges)
            assert not digest.needs_md5_only, name
        inline = FileDigest(self._digest(data).check, ranges, inline_limit=1 << 20)
        assert not inline.needs_md5_only
