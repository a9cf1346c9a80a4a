from __future__ import annotations

import pytest

from storage_init._retry import RetryBudget
from storage_init.config import RetryConfig
from storage_init.errors import (
    AccessDeniedError,
    NetworkError,
    RetriesExhaustedError,
)


class TestRetryBudget:
    def test_backoff_grows_and_is_capped(self) -> None:
        """Delays double from the initial backoff up to the cap (jitter at max)."""
        cfg = RetryConfig(max_attempts=10, initial_backoff=0.5, max_backoff=2.0)
        budget = RetryBudget(cfg, rand=lambda: 0.999999)
        delays = [round(budget.next_delay(NetworkError("x")), 2) for _ in range(5)]
        assert delays == [0.5, 1.0, 2.0, 2.0, 2.0]

    def test_gives_up_after_max_attempts(self) -> None:
        """The budget raises RetriesExhaustedError naming the last error."""
        budget = RetryBudget(RetryConfig(max_attempts=2), rand=lambda: 0.0)
        budget.next_delay(NetworkError("reset"))
        with pytest.raises(RetriesExhaustedError) as info:
            budget.next_delay(NetworkError("reset"))
        assert info.value.attempts == 2
        assert "reset" in str(info.value)

    def test_gives_up_after_total_timeout(self) -> None:
        """Past the total timeout no further attempt is made."""
        now = [0.0]
        budget = RetryBudget(
            RetryConfig(max_attempts=100, total_timeout=10), clock=lambda: now[0]
        )
        now[0] = 11.0
        with pytest.raises(RetriesExhaustedError):
            budget.next_delay(NetworkError("slow"))

    def test_permanent_errors_are_not_retried(self) -> None:
        """A non-retryable error is raised as is."""
        with pytest.raises(AccessDeniedError):
            RetryBudget(RetryConfig()).next_delay(AccessDeniedError("no"))
