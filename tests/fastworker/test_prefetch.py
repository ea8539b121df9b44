"""The executor's prefetch per kind of slot follows its start rate and the
dispatch round trip: about two round trips' worth of starts, between its
least and its most. Pure arithmetic on the times given."""

from __future__ import annotations

import math

import pytest

from fastworker.executor.prefetch import (
    FIRST_ROUND_TRIP,
    HOLD_AT_LEAST,
    MAX_ROUND_TRIP,
    RATE_MEMORY,
    ROUND_TRIP_JUMP,
    ROUND_TRIP_WEIGHT,
    WINDOW,
    Prefetch,
)
from fastworker.messages import ASYNC, PROCESS, THREAD


def trip(prefetch: Prefetch, at: float, seconds: float) -> None:
    """A grant of 2 thread slots at ``at``, used up ``seconds`` later."""
    prefetch.granted(at, [0, 2, 0])
    prefetch.took(at + seconds, [0, 2, 0], [0, 0, 0])


def starts(prefetch: Prefetch, at: float, seconds: float, *per_kind: int) -> float:
    """``per_kind`` starts over a window of ``seconds`` from ``at`` (the
    window begins at ``at``); the time it ends."""
    prefetch.update(at)
    for kind, n in enumerate(per_kind):
        prefetch.started[kind] += n
    prefetch.update(at + seconds)
    return at + seconds


def moved(trip: float, sample: float) -> float:
    """The estimate after one sample."""
    return trip + ROUND_TRIP_WEIGHT * (min(sample, ROUND_TRIP_JUMP * trip) - trip)


def test_it_starts_at_its_least_and_follows_rate_times_two_round_trips() -> None:
    prefetch = Prefetch(128)
    assert prefetch.counts == [1, 1, 1]
    assert prefetch.round_trip == FIRST_ROUND_TRIP
    for n in range(40):  # settles on 15 ms trips
        trip(prefetch, n, 0.015)
    assert prefetch.round_trip == pytest.approx(0.015, rel=1e-4)
    # 1 s of 2,000 thread starts/s (weighs all but e^-10 of it), 10
    # process starts/s: times two 15 ms trips, 60 and 0.3.
    starts(prefetch, 100.0, 1.0, 0, 2_000, 10)
    assert prefetch.rates[THREAD] == pytest.approx(2_000, rel=1e-3)
    assert prefetch.counts[THREAD] == 60
    assert prefetch.counts[PROCESS] == 1  # less than one start per two trips
    assert prefetch.counts[ASYNC] == 1  # nothing started


def test_it_holds_at_least_hold_at_least_of_starts_however_short_the_trip() -> None:
    prefetch = Prefetch(1_000)
    for n in range(40):
        trip(prefetch, n, 0.0001)
    starts(prefetch, 100.0, 1.0, 0, 20_000, 0)
    assert prefetch.counts[THREAD] == math.ceil(20_000 * HOLD_AT_LEAST)


def test_a_short_window_weighs_by_its_length() -> None:
    prefetch = Prefetch(1_000)
    trip(prefetch, 0.0, 0.002)
    assert prefetch.round_trip == pytest.approx(moved(FIRST_ROUND_TRIP, 0.002))
    starts(prefetch, 1.0, WINDOW, 0, 1_000, 0)  # 20,000/s over 50 ms
    rate = 20_000 * (1 - math.exp(-WINDOW / RATE_MEMORY))
    assert prefetch.rates[THREAD] == pytest.approx(rate)
    assert prefetch.counts[THREAD] == math.ceil(
        rate * max(2 * prefetch.round_trip, HOLD_AT_LEAST))


def test_it_is_bounded_by_its_most_and_its_least() -> None:
    prefetch = Prefetch(16, least=3)
    starts(prefetch, 0.0, 1.0, 100_000, 0, 0)
    assert prefetch.counts == [16, 3, 3]


def test_idle_slots_bring_it_back_to_its_least() -> None:
    prefetch = Prefetch(128)
    end = starts(prefetch, 0.0, 1.0, 0, 200_000, 0)
    assert prefetch.counts[THREAD] == 128
    starts(prefetch, end, 1.0, 0, 0, 0)  # a second of nothing started
    assert prefetch.counts[THREAD] == 1


def test_a_grant_s_age_when_jobs_use_it_up_is_a_sample_oldest_grant_first() -> None:
    """The Dispatcher spends credit in the order it was granted: jobs that
    use up a grant answer it. One that only takes part of it is no sample
    yet; credit that came back another way is forgotten."""
    prefetch = Prefetch(128)
    prefetch.granted(0.0, [4, 2, 0])
    prefetch.granted(0.0002, [0, 3, 0])
    prefetch.took(0.0005, [1, 1, 0], [3, 4, 0])  # part of the oldest grants
    assert prefetch.round_trip == FIRST_ROUND_TRIP
    prefetch.took(0.0006, [0, 3, 0], [3, 1, 0])  # the first thread grant, then part
    first = moved(FIRST_ROUND_TRIP, 0.0006)
    assert prefetch.round_trip == pytest.approx(first)
    prefetch.took(0.0009, [0, 1, 0], [3, 0, 0])  # the second, 0.7 ms old
    second = moved(first, 0.0007)
    assert prefetch.round_trip == pytest.approx(second)
    prefetch.took(5.0, [0, 0, 0], [0, 0, 0])  # the async credit came back unused
    prefetch.took(5.0, [3, 0, 0], [0, 0, 0])  # past what it holds: no sample
    assert prefetch.round_trip == pytest.approx(second)


def test_a_longer_wait_counts_only_from_jobs_that_used_up_the_credit() -> None:
    """While the Dispatcher holds spare credit (light load), a grant is
    used up only once all the credit went round: its age is no trip. A
    longer sample counts only from jobs that left none of their kind's
    credit out; a shorter one always counts."""
    prefetch = Prefetch(128)
    prefetch.granted(0.0, [0, 4, 0])
    prefetch.granted(0.5, [0, 1, 0])
    prefetch.took(2.0, [0, 4, 0], [0, 1, 0])  # 2 s old, credit left out
    assert prefetch.round_trip == FIRST_ROUND_TRIP
    prefetch.granted(2.0, [0, 1, 0])
    prefetch.took(2.0002, [0, 1, 0], [0, 1, 0])  # the 0.5 one: still spare credit
    assert prefetch.round_trip == FIRST_ROUND_TRIP
    prefetch.took(2.0005, [0, 1, 0], [0, 0, 0])  # shorter: counts
    assert prefetch.round_trip == pytest.approx(moved(FIRST_ROUND_TRIP, 0.0005))


def test_a_wait_for_jobs_counts_as_at_most_a_few_round_trips() -> None:
    """A grant that waited while the Dispatcher had no jobs: its age was
    waiting for jobs to be submitted, so it counts as at most
    ``ROUND_TRIP_JUMP`` times the estimate, and real trips take the
    estimate back down."""
    prefetch = Prefetch(128)
    trip(prefetch, 0.0, 60.0)
    raised = FIRST_ROUND_TRIP * (1 + ROUND_TRIP_WEIGHT * (ROUND_TRIP_JUMP - 1))
    assert prefetch.round_trip == pytest.approx(raised)
    for n in range(20):
        trip(prefetch, 100.0 + n, 0.001)
    assert prefetch.round_trip == pytest.approx(0.001, rel=0.01)


def test_a_real_rise_is_followed_within_a_few_trips() -> None:
    prefetch = Prefetch(128)
    for n in range(12):
        trip(prefetch, n, 0.02)
    assert 0.015 < prefetch.round_trip <= 0.02
    for n in range(100):  # never past MAX_ROUND_TRIP
        trip(prefetch, 100 + n * 10, 5.0)
    assert prefetch.round_trip == pytest.approx(MAX_ROUND_TRIP)


def test_a_window_shorter_than_window_changes_nothing() -> None:
    prefetch = Prefetch(128)
    prefetch.update(0.0)
    prefetch.started[THREAD] += 1_000
    assert not prefetch.update(WINDOW / 2)
    assert prefetch.counts == [1, 1, 1]
    assert prefetch.update(WINDOW)
    assert prefetch.counts[THREAD] > 1


def test_least_equal_to_most_keeps_it_fixed_and_zero_means_none() -> None:
    fixed = Prefetch(8, least=8)
    starts(fixed, 0.0, 1.0, 0, 0, 0)
    assert fixed.counts == [8, 8, 8]
    none = Prefetch(0)
    starts(none, 0.0, 1.0, 100_000, 100_000, 100_000)
    assert none.counts == [0, 0, 0]
