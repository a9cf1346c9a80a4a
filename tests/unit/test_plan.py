from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage_init._plan import ByteRange, plan_ranges


def _assert_covers(ranges: list[ByteRange], size: int) -> None:
    assert ranges[0].start == 0
    assert ranges[-1].end == size
    for a, b in itertools.pairwise(ranges):
        assert a.end == b.start


class TestPlanRanges:
    def test_small_object_is_one_range(self) -> None:
        """An object no larger than a part is fetched in one range."""
        assert plan_ranges(10, 10) == [ByteRange(0, 10)]

    def test_empty_object(self) -> None:
        """A zero-byte object is one empty range."""
        assert plan_ranges(0, 10) == [ByteRange(0, 0)]

    @given(size=st.integers(0, 10**7), part=st.integers(1000, 10**6))
    def test_covers_without_gaps(self, size: int, part: int) -> None:
        """Ranges cover [0, size) contiguously, none longer than the part size."""
        ranges = plan_ranges(size, part)
        _assert_covers(ranges, size)
        assert all(r.length <= part for r in ranges)

    @given(
        parts=st.lists(st.integers(1, 5000), min_size=1, max_size=50),
        part=st.integers(1, 20000),
    )
    def test_aligned_to_parts(self, parts: list[int], part: int) -> None:
        """With upload parts, every range is whole parts, in order."""
        size = sum(parts)
        ranges = plan_ranges(size, part, parts)
        _assert_covers(ranges, size)
        assert [s for r in ranges for s in r.segments] == parts
        for r in ranges:
            assert sum(r.segments) == r.length
            assert r.length <= part or len(r.segments) == 1

    def test_parts_must_add_up(self) -> None:
        """Part lengths that disagree with the size are refused."""
        with pytest.raises(ValueError, match="add up"):
            plan_ranges(10, 5, [4, 4])
