from __future__ import annotations

import pytest

from storage_init.backends.memory import MemoryBackend
from tests.backends.conformance import BackendConformance


class TestMemory(BackendConformance):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()

    @pytest.fixture
    def paged_backend(self, backend: MemoryBackend) -> MemoryBackend:
        backend.page_size = 2
        return backend

    @pytest.fixture
    def denied_backend(self) -> None:
        pytest.skip("the memory store has no credentials")

    @pytest.fixture
    def bucket(self) -> str:
        return "bucket"

    @pytest.fixture
    def seed(self, backend: MemoryBackend, bucket: str):
        def put(key: str, data: bytes, **kwargs: object) -> None:
            backend.put(bucket, key, data, **kwargs)  # type: ignore[arg-type]

        return put
