"""What a WorkerLink holds for its next Reports: the Executor's ``Running``
reports, outcomes and the ids of jobs it gave back unstarted, in order,
until the control plane has taken them.

The buffer is bounded: across an outage at most ``max_buffered_outcomes``
outcomes (and as many ``Running``) wait, the oldest dropped beyond that and
counted. The ids of jobs given back are never dropped (a job whose id were
lost would wait on this worker's account until it is declared lost): they
are bounded by the jobs the worker was assigned, as the session adds only
the ids of jobs it holds, each once. ``take`` hands out the oldest that fit
one Report, of bounded size; ``put_back`` returns them when that Report
could not be sent. No I/O and no clock here: the link's session decides
when a Report goes.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastworker.messages import Outcome, Running

__all__ = ["DEFAULT_MAX_BUFFERED_OUTCOMES", "REPORT_MAX_ITEMS", "ReportBuffer"]

#: Outcomes a link keeps while the control plane cannot take them.
DEFAULT_MAX_BUFFERED_OUTCOMES = 10_000
#: The most outcomes (and, apart, ``Running`` reports and ids of jobs given
#: back) one Report carries: a backlog after an outage goes out in several,
#: oldest first.
REPORT_MAX_ITEMS = 500
#: Bytes an outcome adds to a frame besides its value and error text
#: (its id, worker, times): for keeping a Report within ``max_frame_bytes``.
_OUTCOME_OVERHEAD = 200
#: Bytes an id adds to a frame besides its characters (msgpack's header).
_ID_OVERHEAD = 8


class ReportBuffer:
    """Starts and outcomes not yet delivered, oldest first, bounded.

    Args:
        max_buffered: the most outcomes (and, apart, ``Running`` reports)
            kept; ``bound`` drops the oldest beyond it.
        max_frame_bytes: the largest frame; a Report's outcomes fill at
            most about half of one.
    """

    def __init__(self, *, max_buffered: int, max_frame_bytes: int) -> None:
        self.max_buffered = max_buffered
        self._max_frame_bytes = max_frame_bytes
        self._running: list[Running] = []
        self._finished: list[Outcome] = []
        self._returned: list[str] = []
        #: Dropped beyond the bound, in all.
        self.outcomes_dropped = 0
        self.running_dropped = 0

    def __bool__(self) -> bool:
        """Whether anything waits to be reported."""
        return bool(self._running or self._finished or self._returned)

    @property
    def has_running(self) -> bool:
        """Whether a ``Running`` report waits."""
        return bool(self._running)

    @property
    def outcomes(self) -> int:
        """How many outcomes wait."""
        return len(self._finished)

    def add_running(self, running: Running) -> None:
        self._running.append(running)

    def add_outcomes(self, outcomes: Iterable[Outcome]) -> None:
        self._finished.extend(outcomes)

    def add_returned(self, ids: Iterable[str]) -> None:
        """Ids of jobs given back unstarted: never dropped by ``bound``."""
        self._returned.extend(ids)

    def bound(self) -> int:
        """Keep at most ``max_buffered`` undelivered outcomes (and
        ``Running`` reports): the oldest go, counted.

        Returns:
            How many outcomes were dropped now (for the caller to log).
        """
        most = self.max_buffered
        dropped = over = len(self._finished) - most
        if over > 0:
            del self._finished[:over]
            self.outcomes_dropped += over
        over = len(self._running) - most
        if over > 0:
            del self._running[:over]
            self.running_dropped += over
        return max(dropped, 0)

    def take(self) -> tuple[list[Running], list[Outcome], list[str]]:
        """The oldest buffered starts, outcomes and ids given back that fit
        one Report: at most ``REPORT_MAX_ITEMS`` of each, the outcomes
        within about half a frame and the ids within a quarter (always at
        least one: a bigger outcome fails alone, as before)."""
        running = self._running[:REPORT_MAX_ITEMS]
        del self._running[:REPORT_MAX_ITEMS]
        count, budget = 0, self._max_frame_bytes // 4
        for task_id in self._returned[:REPORT_MAX_ITEMS]:
            budget -= len(task_id) + _ID_OVERHEAD
            if budget < 0 and count:
                break
            count += 1
        returned = self._returned[:count]
        del self._returned[:count]
        budget = self._max_frame_bytes // 2
        count = 0
        for outcome in self._finished[:REPORT_MAX_ITEMS]:
            size = _OUTCOME_OVERHEAD + len(outcome.value or b"")
            if outcome.error is not None:
                size += len(outcome.error.message) + len(outcome.error.traceback)
            budget -= size
            if budget < 0 and count:
                break
            count += 1
        finished = self._finished[:count]
        del self._finished[:count]
        return running, finished, returned

    def put_back(self, running: list[Running], finished: list[Outcome],
                 returned: list[str]) -> None:
        """Return what ``take`` gave, in front, when its Report was not sent."""
        self._running[:0], self._finished[:0] = running, finished
        self._returned[:0] = returned
