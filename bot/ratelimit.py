"""Per-person and per-channel rate limits on impersonation: a sliding window of recent requests per key.

A sliding log (not a token bucket) because the rule users read is "at most N per minute", and the reply can
say exactly when the next one is allowed. The clock is injected so tests move time by hand.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from bot.errors import RateLimitedError

Clock = Callable[[], float]


class SlidingWindow:
    """At most `limit` events per `window` seconds for each key; limit 0 means unlimited."""

    def __init__(self, limit: int, window: float, clock: Clock = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def wait_time(self, key: str) -> float:
        """Seconds until `key` may act again; 0 when it may act now."""
        if self.limit <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            events = self._prune(key, now)
            return 0.0 if len(events) < self.limit else events[0] + self.window - now

    def record(self, key: str) -> None:
        if self.limit <= 0:
            return
        with self._lock:
            now = self.clock()
            self._prune(key, now).append(now)
            if len(self._events) > 10_000:  # forget idle keys so a long-running bot does not grow forever
                for k in [k for k, v in self._events.items() if not v]:
                    del self._events[k]


class RateLimits:
    """The per-user and per-channel limits together: `acquire` checks both before counting either."""

    def __init__(self, user_limit: int, channel_limit: int, window: float, clock: Clock = time.monotonic):
        self.users = SlidingWindow(user_limit, window, clock)
        self.channels = SlidingWindow(channel_limit, window, clock)
        self._lock = threading.Lock()

    def acquire(self, user_key: str, channel_key: str) -> None:
        """Count one request, or raise RateLimitedError with a friendly "slow down" message."""
        with self._lock:  # check-then-record as one step, so two racing requests cannot both squeeze in
            user_wait = self.users.wait_time(user_key)
            channel_wait = self.channels.wait_time(channel_key)
            if user_wait > 0:
                raise RateLimitedError(
                    f"slow down: you can ask for {self.users.limit} impersonations every {_span(self.users.window)}; "
                    f"try again in {_span(user_wait)}.")
            if channel_wait > 0:
                raise RateLimitedError(
                    f"slow down: this channel has had its {self.channels.limit} impersonations for "
                    f"{_span(self.channels.window)}; try again in {_span(channel_wait)}.")
            self.users.record(user_key)
            self.channels.record(channel_key)


def _span(seconds: float) -> str:
    s = max(1, math.ceil(seconds))
    if s < 120:
        return f"{s} s"
    return f"{math.ceil(s / 60)} min"
