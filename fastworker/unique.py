"""``UniqueKeys``: idempotency keys of submissions, for the inbox.

A Submit may carry a ``key``. While the task first submitted with that key
is queued, scheduled or running, a second Submit with the key is answered
with the first task's id and not queued (while the first waits for room,
the second gets its answer once it has one: ``Admission`` does that).
Once the first task is final (succeeded, failed, cancelled, expired, or
forgotten by the store), the key is free again.

The inbox knows which of its tasks are queued or scheduled, but not when a
task handed to a worker ends: the ResultStore does. So before the inbox
decides a request, it asks the store, in one ``StatusQuery``, about the
holders of the request's keys that have left the queue (``pending``), and
frees the keys whose holder is final (``settle``). Only keyed Submits whose
holder is running cost a query; others cost a dict lookup.

The map is bounded by the live tasks: when it passes ``limit`` keys, the
next request's query also covers every holder outside the queue, and the
final ones are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fastworker.messages import FINAL_STATES, Submit, TaskRecord

__all__ = ["UniqueKeys"]


class UniqueKeys:
    """Keys and the id of the task holding each."""

    def __init__(self, limit: int) -> None:
        self._holders: dict[str, str] = {}  # key -> task id
        self._limit = limit
        self.hits_total = 0

    def __len__(self) -> int:
        return len(self._holders)

    def holder(self, key: str) -> str | None:
        """The id of the task holding ``key``, counted as a hit; or ``None``."""
        held = self._holders.get(key)
        if held is not None:
            self.hits_total += 1
        return held

    def claim(self, key: str, task_id: str) -> None:
        """``task_id`` now holds ``key``."""
        self._holders[key] = task_id

    def release(self, key: str, task_id: str) -> None:
        """Free ``key`` if ``task_id`` holds it (its Submit was refused)."""
        if self._holders.get(key) == task_id:
            del self._holders[key]

    def pending(self, submits: Iterable[Submit], queued: Callable[[str], bool]) -> dict[str, str]:
        """The holders to ask the store about before deciding ``submits``:
        ``{task id: key}`` of keys they name whose holder is not ``queued``
        (queued, scheduled, waiting for room or unwritten in the inbox: the
        store may not know it yet); every such holder when the map is over
        its limit."""
        holders = self._holders
        asked: dict[str, str] = {}
        for submit in submits:
            if submit.key:
                held = holders.get(submit.key)
                if held is not None and not queued(held):
                    asked[held] = submit.key
        if len(holders) > self._limit:
            asked.update((held, key) for key, held in holders.items() if not queued(held))
        return asked

    def settle(self, asked: dict[str, str], records: Iterable[TaskRecord]) -> None:
        """Free the keys whose holder the store says is final or unknown."""
        live = {record.id for record in records
                if record.state not in FINAL_STATES and record.state != "unknown"}
        for task_id, key in asked.items():
            if task_id not in live:
                self.release(key, task_id)
