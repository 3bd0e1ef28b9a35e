"""Backoff: the first wait is exact, later ones grow to the cap with jitter."""

from __future__ import annotations

from missive.runtime import Backoff


def test_the_first_wait_is_exact_and_later_ones_double_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next() for _ in range(8)]
    assert delays[0] == 0.5
    for failures, delay in enumerate(delays[1:], start=2):
        full = min(4.0, 0.5 * 2 ** (failures - 1))
        assert full / 2 <= delay <= full
    assert backoff.failures == 8


def test_reset_starts_again_from_the_first_wait() -> None:
    backoff = Backoff(0.05, 1.0)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 0.05


def test_jitter_spreads_the_waits() -> None:
    waits = set()
    for _ in range(20):
        backoff = Backoff(1.0, 60.0)
        backoff.next()
        waits.add(backoff.next())
    assert len(waits) > 1
