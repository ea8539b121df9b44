"""What a WorkerLink holds for its next Reports: the Executor's ``Running``
reports and outcomes, in order, until the control plane has taken them.

The buffer is bounded: across an outage at most ``max_buffered_outcomes``
outcomes (and as many ``Running``) wait, the oldest dropped beyond that and
counted (issue 14). ``take`` hands out the oldest that fit one Report, of
bounded size; ``put_back`` returns them when that Report could not be sent.
No I/O and no clock here: the link's session decides when a Report goes.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastworker.messages import Outcome, Running

__all__ = ["DEFAULT_MAX_BUFFERED_OUTCOMES", "REPORT_MAX_ITEMS", "ReportBuffer"]

#: Outcomes a link keeps while the control plane cannot take them.
DEFAULT_MAX_BUFFERED_OUTCOMES = 10_000
#: The most outcomes (and, apart, ``Running`` reports) one Report carries:
#: a backlog after an outage goes out in several, oldest first.
REPORT_MAX_ITEMS = 500
#: Bytes an outcome adds to a frame besides its value and error text
#: (its id, worker, times): for keeping a Report within ``max_frame_bytes``.
_OUTCOME_OVERHEAD = 200


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
        #: Dropped beyond the bound, in all.
        self.outcomes_dropped = 0
        self.running_dropped = 0

    def __bool__(self) -> bool:
        """Whether anything waits to be reported."""
        return bool(self._running or self._finished)

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

    def take(self) -> tuple[list[Running], list[Outcome]]:
        """The oldest buffered starts and outcomes that fit one Report: at
        most ``REPORT_MAX_ITEMS`` of each, the outcomes within about half a
        frame (always at least one: a bigger one fails alone, as before)."""
        running = self._running[:REPORT_MAX_ITEMS]
        del self._running[:REPORT_MAX_ITEMS]
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
        return running, finished

    def put_back(self, running: list[Running], finished: list[Outcome]) -> None:
        """Return what ``take`` gave, in front, when its Report was not sent."""
        self._running[:0], self._finished[:0] = running, finished
