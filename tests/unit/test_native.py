"""Loading the compiled library (`_native`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from storage_init import _native


@pytest.fixture
def fresh_load() -> Iterator[None]:
    """`library` loads again in the test, and again after it."""
    _native.library.cache_clear()
    yield
    _native.library.cache_clear()


def test_library_of_this_interface_loads(fresh_load) -> None:
    native = _native.library()
    assert native is not None
    assert native.kernels_abi() == _native.ABI


def test_library_of_another_interface_is_not_used(
    fresh_load, monkeypatch, caplog
) -> None:
    """A stale build (other argument lists) would crash when called: refused."""
    monkeypatch.setattr(_native, "ABI", _native.ABI + 1)
    # The CLI's logging setup (if a test ran it) stops records at our logger.
    monkeypatch.setattr(logging.getLogger("storage_init"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="storage_init"):
        assert _native.library() is None
    assert "reinstall storage-init" in caplog.text
