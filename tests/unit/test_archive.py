from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from storage_init import (
    IntegrityError,
    StorageConfig,
    TransferConfig,
    UnsafePathError,
    download,
)
from storage_init.archive import extract, is_archive
from storage_init.backends.memory import MemoryBackend


def _tar(
    members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz"
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:  # type: ignore[call-overload]
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


class TestExtract:
    @pytest.mark.parametrize(
        ("name", "payload"),
        [
            pytest.param("m.tar.gz", lambda m: _tar(m, "w:gz"), id="tar.gz"),
            pytest.param("m.tgz", lambda m: _tar(m, "w:gz"), id="tgz"),
            pytest.param("m.tar", lambda m: _tar(m, "w"), id="tar"),
            pytest.param("m.tar.xz", lambda m: _tar(m, "w:xz"), id="tar.xz"),
            pytest.param("m.zip", lambda m: _zip(dict(m)), id="zip"),
        ],
    )
    async def test_single_archive_is_unpacked(self, tmp_path, name, payload) -> None:
        """A source that is one archive is unpacked into DEST and then deleted."""
        members = [("config.json", b"{}"), ("w/model.bin", os.urandom(5000))]
        store = MemoryBackend()
        store.put("b", f"src/{name}", payload(members))
        report = await download(
            f"memory://b/src/{name}", tmp_path, backends={"memory": store}
        )
        assert report.unpacked == 2
        assert _files(tmp_path) == dict(members)
        assert not (tmp_path / name).exists()

    async def test_rerun_skips_an_unpacked_archive(self, tmp_path) -> None:
        """A rerun neither downloads nor unpacks the same archive version again."""
        store = MemoryBackend()
        store.put("b", "m.tgz", _tar([("a", b"1")]))
        await download("memory://b/m.tgz", tmp_path, backends={"memory": store})
        requests = store.requests
        report = await download(
            "memory://b/m.tgz", tmp_path, backends={"memory": store}
        )
        assert report.unpacked == 0
        assert report.files[0].verification.startswith("unchanged")
        assert store.requests - requests == 1  # the stat only
        assert _files(tmp_path) == {"a": b"1"}

    async def test_extraction_can_be_turned_off(self, tmp_path) -> None:
        """With extract_archives off the archive is kept as downloaded."""
        store = MemoryBackend()
        data = _tar([("a", b"1")])
        store.put("b", "m.tgz", data)
        config = StorageConfig(transfer=TransferConfig(extract_archives=False))
        await download(
            "memory://b/m.tgz", tmp_path, config=config, backends={"memory": store}
        )
        assert _files(tmp_path) == {"m.tgz": data}

    async def test_archive_among_other_files_is_kept(self, tmp_path) -> None:
        """Only a lone archive is unpacked (KServe's rule)."""
        store = MemoryBackend()
        store.put("b", "m/x.tgz", _tar([("a", b"1")]))
        store.put("b", "m/readme", b"r")
        report = await download("memory://b/m", tmp_path, backends={"memory": store})
        assert report.unpacked == 0
        assert set(_files(tmp_path)) == {"x.tgz", "readme"}

    @pytest.mark.parametrize(
        "members",
        [
            pytest.param([("../evil", b"x")], id="dotdot"),
            pytest.param([("/etc/evil", b"x")], id="absolute"),
            pytest.param([("a/../../evil", b"x")], id="nested-dotdot"),
            pytest.param([_link("link", "../../etc/passwd")], id="symlink-out"),
            pytest.param([_link("link", "/etc/passwd")], id="symlink-absolute"),
            pytest.param(
                [("a", b"x"), _link("h", "../a", tarfile.LNKTYPE)], id="hardlink-out"
            ),
            pytest.param([_link("dev", "", tarfile.CHRTYPE)], id="device"),
        ],
    )
    def test_refuses_escapes(self, tmp_path, members) -> None:
        """Members that would escape DEST (or are devices) are refused."""
        dest = tmp_path / "dest"
        dest.mkdir()
        archive = tmp_path / "a.tar"
        archive.write_bytes(_tar(members, "w"))
        with pytest.raises(UnsafePathError):
            extract(archive, dest, max_bytes=1 << 20)
        outside = {p.name for p in tmp_path.iterdir()} - {"dest", "a.tar"}
        assert outside == set()

    def test_zip_slip(self, tmp_path) -> None:
        """A zip entry with .. in its name is refused."""
        dest = tmp_path / "dest"
        dest.mkdir()
        archive = tmp_path / "a.zip"
        archive.write_bytes(_zip({"ok.txt": b"1", "../../evil.txt": b"x"}))
        with pytest.raises(UnsafePathError):
            extract(archive, dest, max_bytes=1 << 20)
        assert not (tmp_path / "evil.txt").exists()

    def test_links_inside_are_kept(self, tmp_path) -> None:
        """Symbolic and hard links that stay inside DEST are recreated."""
        dest = tmp_path / "dest"
        dest.mkdir()
        archive = tmp_path / "a.tar"
        members: list[tarfile.TarInfo | tuple[str, bytes]] = [
            ("w/real.bin", b"data"),
            _link("w/alias.bin", "real.bin"),
            _link("copy.bin", "w/real.bin", tarfile.LNKTYPE),
        ]
        archive.write_bytes(_tar(members, "w"))
        assert extract(archive, dest, max_bytes=1 << 20) == 3
        assert (dest / "w" / "alias.bin").read_bytes() == b"data"
        assert (dest / "copy.bin").read_bytes() == b"data"

    @pytest.mark.parametrize("kind", ["tar.gz", "zip"])
    def test_bomb_stops_at_the_limit(self, tmp_path, kind) -> None:
        """Unpacking stops once the written bytes exceed the limit."""
        dest = tmp_path / "dest"
        dest.mkdir()
        zeros = bytes(16 << 20)  # compresses to a few KiB
        archive = tmp_path / f"bomb.{kind}"
        if kind == "zip":
            archive.write_bytes(_zip({"z1": zeros, "z2": zeros}))
        else:
            archive.write_bytes(_tar([("z1", zeros), ("z2", zeros)]))
        assert archive.stat().st_size < 1 << 20
        with pytest.raises(IntegrityError, match="more than"):
            extract(archive, dest, max_bytes=20 << 20)
        total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        assert total <= 20 << 20
        assert not list(dest.rglob("*.partial"))

    def test_corrupt_archive(self, tmp_path) -> None:
        """A truncated archive is an IntegrityError naming it."""
        archive = tmp_path / "m.tar.gz"
        archive.write_bytes(_tar([("a", os.urandom(100_000))])[:5000])
        with pytest.raises(IntegrityError, match=r"cannot unpack m\.tar\.gz"):
            extract(archive, tmp_path, max_bytes=1 << 30)

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("m.tar.gz", True),
            ("M.ZIP", True),
            ("model.safetensors", False),
            ("x.gz", False),
        ],
    )
    def test_is_archive(self, name, expected) -> None:
        """KServe's archive suffixes, case-insensitive."""
        assert is_archive(name) is expected
