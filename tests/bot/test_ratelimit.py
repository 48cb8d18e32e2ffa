"""bot/ratelimit.py: sliding windows per person and per channel, driven by a hand-moved clock."""

from __future__ import annotations

import threading

import pytest

from bot.errors import RateLimitedError
from bot.ratelimit import RateLimits, SlidingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_per_user_limit_slides_with_time() -> None:
    clock = Clock()
    limits = RateLimits(user_limit=2, channel_limit=0, window=60, clock=clock)
    limits.acquire("u1", "c1")
    clock.now += 10
    limits.acquire("u1", "c1")
    with pytest.raises(RateLimitedError) as err:
        limits.acquire("u1", "c1")
    assert str(err.value) == "slow down: you can ask for 2 impersonations every 60 s; try again in 50 s."
    limits.acquire("u2", "c1")  # someone else is not held back
    clock.now += 50  # the first request leaves the window
    limits.acquire("u1", "c1")
    with pytest.raises(RateLimitedError, match="try again in 10 s"):
        limits.acquire("u1", "c1")


def test_per_channel_limit() -> None:
    clock = Clock()
    limits = RateLimits(user_limit=0, channel_limit=3, window=300, clock=clock)
    for user in ("a", "b", "c"):
        limits.acquire(user, "busy")
    with pytest.raises(RateLimitedError, match="this channel has had its 3 impersonations for 5 min; try again in 5 min"):
        limits.acquire("d", "busy")
    limits.acquire("d", "quiet")


def test_a_refused_request_does_not_count() -> None:
    clock = Clock()
    limits = RateLimits(user_limit=1, channel_limit=1, window=60, clock=clock)
    limits.acquire("u1", "c1")
    for _ in range(5):
        with pytest.raises(RateLimitedError):
            limits.acquire("u2", "c1")  # refused by the channel: u2 used nothing
    limits.acquire("u2", "c2")


def test_zero_means_unlimited() -> None:
    window = SlidingWindow(0, 60, Clock())
    for _ in range(1000):
        window.record("k")
    assert window.wait_time("k") == 0


def test_racing_requests_cannot_overshoot_the_limit() -> None:
    limits = RateLimits(user_limit=5, channel_limit=0, window=60, clock=Clock())
    granted: list[int] = []
    start = threading.Barrier(20)

    def ask(i: int) -> None:
        start.wait()
        try:
            limits.acquire("u", "c")
            granted.append(i)
        except RateLimitedError:
            pass

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 5
