"""A request-rate limit shared by one client's requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``rate`` requests a second, spaced evenly (a token bucket holding one token).

    Each :meth:`acquire` reserves the next free slot and sleeps until it comes, so waiting
    tasks go in the order they asked. ``clock`` and ``sleep`` are replaceable for tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be a positive number of requests a second, got {rate!r}")
        self.rate = float(rate)
        self._interval = 1.0 / self.rate
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate})"

    async def acquire(self) -> None:
        """Wait for the next free slot."""
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)
