"""When and how long to wait before asking an upstream again.

Worth retrying: broken connections and timeouts, ``408``, ``429`` and ``5xx`` answers
(:class:`TransientError`), and content that failed verification (:class:`DigestMismatch`,
:class:`SizeMismatch`). Everything else fails at once. Waits grow exponentially with full
jitter, and a ``Retry-After`` the upstream sent is honoured; no wait is longer than
``backoff_max``. Waiting uses the policy's ``sleep`` (``asyncio.sleep``), never a blocking one.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import httpx

from ocimirror.errors import DigestMismatch, SizeMismatch, UpstreamError

__all__ = ["RetryPolicy", "TransientError", "parse_retry_after", "retryable_status"]

_T = TypeVar("_T")


def retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth asking again for: 408, 429, and 5xx but 501 and 505."""
    return status in (408, 429) or (status >= 500 and status not in (501, 505))


class TransientError(UpstreamError):
    """An upstream answer that may well be different next time (408, 429, 5xx).

    ``retry_after`` is the wait in seconds the upstream asked for, if it did.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, errors=errors, url=url)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date.

    ``None`` when absent or unreadable; a date in the past gives ``0.0``.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often to retry and how long to wait in between.

    Args:
        max_retries: Attempts after the first (``0`` never retries).
        backoff_base: The first wait's upper bound in seconds; it doubles with each retry.
        backoff_max: No wait is longer, ``Retry-After`` included.
        sleep: The coroutine that waits (replace it to record waits in tests).
    """

    max_retries: int = attrs.field(default=3, validator=_non_negative)
    backoff_base: float = attrs.field(default=0.5, validator=_non_negative)
    backoff_max: float = attrs.field(default=30.0, validator=_non_negative)
    sleep: Callable[[float], Awaitable[None]] = attrs.field(
        default=asyncio.sleep, eq=False, repr=False
    )

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt."""
        if isinstance(exc, TransientError | DigestMismatch | SizeMismatch):
            return True
        return isinstance(
            exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
        )

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """The wait before retry number ``attempt + 1``.

        The upstream's ``Retry-After`` if ``exc`` carries one, else a uniformly random wait up
        to ``backoff_base * 2**attempt``; never more than ``backoff_max``.
        """
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(exc.retry_after, self.backoff_max)
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** min(attempt, 64))
        return random.uniform(0.0, ceiling)

    async def run(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> _T:
        """Await ``attempt()`` until it succeeds, fails for good, or the retries run out.

        ``on_retry(exc, retry_number, delay)`` is called before each wait. The last error is
        raised as it is.
        """
        tries = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if tries >= self.max_retries or not self.retryable(exc):
                    raise
                wait = self.delay(tries, exc)
                tries += 1
                if on_retry is not None:
                    on_retry(exc, tries, wait)
            await self.sleep(wait)
