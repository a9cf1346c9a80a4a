"""The first item of an async iterator, asked for ahead of knowing it is wanted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["FirstItem"]

T = TypeVar("T")


class FirstItem(Generic[T]):
    """Fetch the first item of `items` in a task of its own (`fetch`), and keep it.

    For a request whose answer may turn out not to be needed (a listing sent
    alongside the HEAD that decides whether it is): its failure is kept, not
    raised, until `rest` asks for the items. A cancelled `fetch` keeps nothing,
    and `rest` must not be called then; an iterator left unfinished is closed
    when it is dropped (as any async generator given up on).

    The iterator's first step runs in `fetch`'s task and the others in the
    caller's: so it must not hold a cancel scope, task group or limiter token
    across a ``yield`` (none of the backends' listings do).
    """

    def __init__(self, items: AsyncIterator[T]) -> None:
        self._items = items
        self._first: list[T] = []
        self._error: Exception | None = None

    async def fetch(self) -> None:
        """Take the first item, or the end, or the failure (kept for `rest`)."""
        try:
            self._first.append(await anext(self._items))
        except StopAsyncIteration:
            pass
        except Exception as exc:  # noqa: BLE001  (kept, raised by `rest` if wanted)
            self._error = exc

    async def rest(self) -> AsyncIterator[T]:
        """Yield the first item, then the iterator's others, once `fetch` returned.

        Raises:
            Whatever the iterator raised, the first step's failure included.
        """
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        for item in self._first:
            yield item
        if self._first:
            async for item in self._items:
                yield item
