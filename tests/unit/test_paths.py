from __future__ import annotations

import pytest

from storage_init._paths import is_selected, safe_relative
from storage_init.errors import UnsafePathError


class TestSafeRelative:
    @pytest.mark.parametrize(
        ("rel", "expected"),
        [
            ("a/b.bin", "a/b.bin"),
            ("a//b", "a/b"),
            ("./a/./b", "a/b"),
            ("a b/ü", "a b/ü"),
        ],
    )
    def test_normalises(self, rel: str, expected: str) -> None:
        """Empty and dot segments are dropped, other names kept."""
        assert str(safe_relative(rel)) == expected

    @pytest.mark.parametrize(
        "rel", ["../x", "a/../../x", "/etc/passwd", "a\x00b", "", "./"]
    )
    def test_refuses_escapes(self, rel: str) -> None:
        """Keys that would leave the destination raise UnsafePathError."""
        with pytest.raises(UnsafePathError):
            safe_relative(rel)


class TestIsSelected:
    def test_allow_then_ignore(self) -> None:
        """The allow list filters first, then the ignore list removes."""
        allow, ignore = ("*.json", "*.safetensors"), ("*optimizer*",)
        assert is_selected("config.json", allow, ignore)
        assert not is_selected("model.bin", allow, ignore)
        assert not is_selected("optimizer.safetensors", allow, ignore)
        assert is_selected("anything", (), ())
