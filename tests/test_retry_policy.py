"""missive.retry.Retry: delays, jitter bounds, caps, limits and what no retry can fix."""

from __future__ import annotations

import random
from typing import Any

import pytest

from missive.errors import MessageDecodeError
from missive.retry import NO_RETRY, Retry


def test_the_cap_grows_by_the_multiplier_up_to_max_delay() -> None:
    policy = Retry(delayed=10, initial_delay=1.0, multiplier=2.0, max_delay=10.0)
    assert [policy.cap(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_huge_retry_number_is_capped_without_overflow() -> None:
    policy = Retry(delayed=10_000, initial_delay=0.5, multiplier=10.0, max_delay=3600.0)
    assert policy.cap(5_000) == 3600.0


def test_full_jitter_draws_between_zero_and_the_cap() -> None:
    policy = Retry(delayed=5, initial_delay=2.0, multiplier=3.0, max_delay=100.0)
    rng = random.Random(7)
    for retry in range(1, 6):
        draws = [policy.delay(retry, rng) for _ in range(2000)]
        assert all(0.0 <= d <= policy.cap(retry) for d in draws)
        # spread over the whole range, not bunched at one end
        assert min(draws) < 0.05 * policy.cap(retry)
        assert max(draws) > 0.95 * policy.cap(retry)


def test_next_delay_stops_after_the_delayed_retries_or_max_total() -> None:
    policy = Retry(delayed=2, initial_delay=1.0, max_total=60.0)
    rng = random.Random(1)
    assert policy.next_delay(0, 0.0, rng) is not None
    assert policy.next_delay(1, 30.0, rng) is not None
    assert policy.next_delay(2, 30.0, rng) is None  # both delayed retries used
    assert policy.next_delay(0, 60.0, rng) is None  # past max_total


def test_unrecoverable_types_and_decode_errors_are_never_retried() -> None:
    class PermanentError(Exception):
        pass

    class WorseError(PermanentError):
        pass

    policy = Retry(immediate=3, delayed=3, unrecoverable=[PermanentError])
    assert not policy.can_fix(PermanentError())
    assert not policy.can_fix(WorseError())
    assert not policy.can_fix(MessageDecodeError(b"id", "invalid JSON"))
    assert policy.can_fix(TimeoutError())
    assert policy.can_fix(None)  # the handler asked for a retry


def test_the_default_policy_retries_nothing() -> None:
    assert NO_RETRY.immediate == NO_RETRY.delayed == 0
    assert NO_RETRY.next_delay(0, 0.0) is None
    assert repr(NO_RETRY) == "Retry()"
    assert repr(Retry(delayed=3)) == "Retry(delayed=3)"


@pytest.mark.parametrize(
    "options",
    [
        {"immediate": -1},
        {"delayed": 1.5},
        {"immediate": True},
        {"initial_delay": 0},
        {"initial_delay": 5.0, "max_delay": 1.0},
        {"max_delay": float("inf")},
        {"multiplier": 0.5},
        {"max_total": 0},
    ],
)
def test_numbers_out_of_range_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Retry(**options)


def test_unrecoverable_takes_exception_types_only() -> None:
    with pytest.raises(TypeError, match="exception types"):
        Retry(unrecoverable=[ValueError, "KeyError"])  # type: ignore[list-item]
