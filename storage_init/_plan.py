"""Split an object into byte ranges. Pure: no I/O, no async.

A range is what one GET fetches. When a checksum is defined over the upload's
parts (a multipart ETag, a composite CRC), ranges are built from whole parts, so
that each part can be hashed in order by the one writer that receives its bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ByteRange", "plan_ranges"]


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class ByteRange(NamedTuple):
    """Bytes ``[start, end)`` of an object, and the part boundaries inside them.

    Attributes:
        start: first byte.
        end: one past the last byte.
        segments: lengths of the upload parts that make up this range, in order;
            empty when parts do not matter.
    """

    start: int
    end: int
    segments: tuple[int, ...] = ()

    @property
    def length(self) -> int:
        """Number of bytes in the range."""
        return self.end - self.start

    @property
    def parts(self) -> tuple[int, ...]:
        """The lengths of its messages: `segments`, or the whole range as one."""
        return self.segments or (self.length,)


def plan_ranges(
    size: int, part_size: int, parts: Sequence[int] | None = None
) -> list[ByteRange]:
    """Return the ranges that cover an object of `size` bytes, in order.

    Without `parts`, the object is cut into `part_size` ranges (the last shorter),
    and an object of at most `part_size` bytes (zero included) is one range.
    With `parts` (the upload's part lengths), consecutive parts are grouped while the
    group stays within `part_size`; a part longer than that is a range of its own.

    Raises:
        ValueError: `size` is negative, `part_size` is not positive, or `parts` do
            not add up to `size`.
    """
    if size < 0 or part_size <= 0:
        msg = f"invalid size {size} or part size {part_size}"
        raise ValueError(msg)
    if parts is None:
        if size <= part_size:
            return [ByteRange(0, size)]
        return [
            ByteRange(start, min(start + part_size, size))
            for start in range(0, size, part_size)
        ]
    if sum(parts) != size or any(p <= 0 for p in parts):
        msg = f"part lengths do not add up to the object size {size}"
        raise ValueError(msg)
    ranges: list[ByteRange] = []
    start = 0
    group: list[int] = []
    for part in parts:
        if group and sum(group) + part > part_size:
            ranges.append(ByteRange(start, start + sum(group), tuple(group)))
            start += sum(group)
            group = []
        group.append(part)
    if group or not ranges:
        ranges.append(ByteRange(start, start + sum(group), tuple(group)))
    return ranges
