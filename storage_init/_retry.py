"""Exponential backoff with full jitter, and the per-range retry budget."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from .errors import RetriesExhaustedError, TransferError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import RetryConfig

__all__ = ["RetryBudget"]


class RetryBudget:
    """Decides, after each failure of one range, whether and when to try again.

    Args:
        config: attempts, backoffs and total time allowed.
        clock: monotonic seconds (injectable for tests).
        rand: uniform [0, 1) source for jitter (injectable for tests).
    """

    def __init__(
        self,
        config: RetryConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._clock = clock
        self._rand = rand
        self._started = clock()
        self.attempts = 1

    def next_delay(self, error: TransferError) -> float:
        """Return the seconds to sleep before the next attempt.

        Raises:
            TransferError: `error` itself when it is not retryable.
            RetriesExhaustedError: attempts or total time are used up.
        """
        if not error.retryable:
            raise error
        cfg = self._config
        if self.attempts >= cfg.max_attempts:
            raise RetriesExhaustedError(error, attempts=self.attempts) from error
        ceiling = min(cfg.max_backoff, cfg.initial_backoff * 2.0 ** (self.attempts - 1))
        delay = ceiling * self._rand()
        if self._clock() + delay - self._started > cfg.total_timeout:
            raise RetriesExhaustedError(error, attempts=self.attempts) from error
        self.attempts += 1
        return delay
