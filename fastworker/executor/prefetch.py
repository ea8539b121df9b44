"""How many jobs an executor takes beyond its free slots, per kind of slot:
enough to keep its slots busy while its next credit goes to the Dispatcher
and jobs come back, and no more.

Jobs taken beyond the free slots wait on this worker, where a more urgent
job queued later cannot overtake them and an idle worker cannot take them.
So the prefetch follows what it hides: about the jobs its slots start
during two dispatch round trips (the start rate times the round trip,
twice for safety) or ``HOLD_AT_LEAST`` seconds, whichever is longer; at
least ``min_prefetch`` (1), at most ``prefetch``. Short tasks get many (a
no-op flood needs about a hundred to keep threads busy), long ones one (a
critical job then waits for about one task, not a backlog).

It only counts and computes, with the time given: no clock of its own, no
messages. The executor tells it what starts and when credit goes out and
jobs come in, and asks it for the counts when it grants credit.
"""

from __future__ import annotations

import collections
import math

__all__ = ["Prefetch"]

#: Seconds of starts a rate is measured over, at least.
WINDOW = 0.05
#: Seconds over which the rate forgets: a window this long weighs 63%, a
#: second of idleness leaves nothing of the rate before it.
RATE_MEMORY = 0.1
#: The round trip assumed before one is measured, in seconds (a control
#: plane's own executor or a subworker on its network: about a millisecond).
FIRST_ROUND_TRIP = 0.001
#: Each sample moves the estimate ``ROUND_TRIP_WEIGHT`` of the way to it,
#: and counts at most ``ROUND_TRIP_JUMP`` times the estimate: a real rise
#: is followed within a few trips (at most +75% per sample), a wait that
#: was for jobs to be submitted moves it once, and the next trips take it
#: back. Smoothed, not the least seen: the jobs that answer a grant can
#: come from the Dispatcher's own hand (a short trip) or through the
#: queue (the usual one), and the prefetch must cover the usual one.
ROUND_TRIP_JUMP = 4.0
ROUND_TRIP_WEIGHT = 0.25
#: The longest round trip counted, in seconds.
MAX_ROUND_TRIP = 1.0
#: Seconds of starts it holds at least, however short the trip: each
#: dispatch round costs the control plane about as much as a few dozen
#: no-op jobs, so very short tasks take rounds of at least this much work
#: (measured: sync no-ops through 2 subworkers did 9,800/s at 10 ms,
#: 11,800/s at 20 ms). A job that reaches a busy worker waits behind at
#: most about this much more.
HOLD_AT_LEAST = 0.02


class Prefetch:
    """The prefetch per kind of slot (``counts``), between ``least`` and
    ``most`` (0 if ``most`` is 0: no prefetch at all; both the same: it
    stays there).

    The rate is of starts per kind, over windows of at least ``WINDOW``
    seconds, smoothed over ``RATE_MEMORY``. The round trip is the age of
    a grant of credit when jobs use it up: the Dispatcher spends credit in
    the order it was granted, so the jobs that use up a grant are answers
    to it, smoothed. While the Dispatcher holds spare credit, that age is
    how long the credit went round, not the trip: a sample longer than the
    estimate counts only from jobs that left none of their kind's credit
    with the Dispatcher (it had more jobs than credit), and at most
    ``ROUND_TRIP_JUMP`` times the estimate.
    """

    __slots__ = ("most", "least", "fixed", "counts", "started", "_rate", "_round_trip",
                 "_window_at", "_grants", "_granted")

    def __init__(self, most: int, least: int = 1) -> None:
        self.most = most
        self.least = least = min(least, most)
        #: It never changes: nothing to measure.
        self.fixed = least == most
        self.counts = [least, least, least]
        #: Starts per kind since the window began (the executor adds to it).
        self.started = [0, 0, 0]
        self._rate = [0.0, 0.0, 0.0]
        self._round_trip = FIRST_ROUND_TRIP
        self._window_at: float | None = None  # the first update begins it
        #: Per kind, the grants not yet used up, oldest first: [when, left];
        #: and what is left of them together.
        self._grants: tuple[collections.deque[list[float]], ...] = (
            collections.deque(), collections.deque(), collections.deque())
        self._granted = [0, 0, 0]

    @property
    def round_trip(self) -> float:
        """The round trip as measured so far (seconds)."""
        return self._round_trip

    @property
    def rates(self) -> tuple[float, float, float]:
        """Starts per second per kind, as measured so far."""
        rate = self._rate
        return rate[0], rate[1], rate[2]

    def granted(self, now: float, credit: list[int]) -> None:
        """``credit`` per kind was sent to the Dispatcher."""
        for kind, n in enumerate(credit):
            if n > 0:
                self._grants[kind].append([now, n])
                self._granted[kind] += n

    def took(self, now: float, taken: list[int], out: list[int]) -> None:
        """Jobs came that took ``taken`` credit per kind; ``out`` is what
        the Dispatcher still holds (grants beyond it are forgotten: credit
        that came back another way)."""
        youngest = -1.0
        spent = False  # a kind whose credit they used up entirely
        granted = self._granted
        for kind, grants in enumerate(self._grants):
            n = taken[kind]
            if n > 0 and grants:
                granted[kind] -= n
                while n > 0 and grants:
                    grant = grants[0]
                    if grant[1] > n:
                        grant[1] -= n
                        break
                    n -= int(grant[1])
                    youngest = max(youngest, grant[0])
                    spent = spent or not out[kind]
                    grants.popleft()
            while granted[kind] > out[kind] and grants:
                granted[kind] -= int(grants.popleft()[1])
            if not grants:
                granted[kind] = 0
        if youngest >= 0:
            self._sample(now - youngest, spent)

    def _sample(self, sample: float, spent: bool) -> None:
        trip = self._round_trip
        if sample > trip:
            if not spent:
                return  # the credit went round unused for a while: not a trip
            sample = min(sample, ROUND_TRIP_JUMP * trip, MAX_ROUND_TRIP)
        self._round_trip = trip + ROUND_TRIP_WEIGHT * (sample - trip)

    def update(self, now: float) -> bool:
        """Take the rate of the window that ends now (if it lasted
        ``WINDOW``) and set ``counts`` from it; ``True`` if one changed."""
        if self._window_at is None:
            self._window_at = now
        elapsed = now - self._window_at
        if elapsed < WINDOW:
            return False
        self._window_at = now
        started, rates, counts = self.started, self._rate, self.counts
        if self.fixed:
            started[0] = started[1] = started[2] = 0
            return False
        hold = max(2 * self._round_trip, HOLD_AT_LEAST)
        most, least = self.most, self.least
        changed = False
        weight = 1.0 - math.exp(-elapsed / RATE_MEMORY)
        for kind in range(3):
            rate = rates[kind] = rates[kind] + weight * (started[kind] / elapsed - rates[kind])
            started[kind] = 0
            count = min(max(math.ceil(rate * hold), least), most)
            if count != counts[kind]:
                counts[kind] = count
                changed = True
        return changed
