"""Many runs of one task at once: ``delay_many`` and ``map``.

``build_each`` turns the calls (a tuple of positional arguments, or a
single argument, each) into Submits; ``run_watched`` submits them and
returns their values, each result watched for from before its task is
submitted, so the control plane keeps it for this client until it has it
(a run larger than the store's ``max_entries`` comes back whole).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import anyio

from fastworker.client.outcome import accepted_id, task_value
from fastworker.client.poller import ResultPoller
from fastworker.client.slot import Slot
from fastworker.messages import Submit
from fastworker.submission import build_submit
from fastworker.tasks import Task

__all__ = ["build_each", "run_watched"]


def build_each(task: str | Task[Any, Any], calls: Iterable[tuple[Any, ...] | Any],
               next_id: Callable[[], str], *, priority: str | None, queue_wait: float,
               fair_key: str | None = None) -> list[Submit]:
    """One Submit of ``task`` per item of ``calls``."""
    submits = []
    for call in calls:
        args = call if isinstance(call, tuple) else (call,)
        submits.append(build_submit(task, args, None, id=next_id(), priority=priority,
                                    queue_wait=queue_wait, fair_key=fair_key))
    return submits


async def run_watched(results: ResultPoller, queue: Callable[[Submit], Slot[Any]],
                      submits: list[Submit], timeout: float | None) -> list[Any]:
    """Submit ``submits`` (``queue`` puts one on its port) and return their
    values in order; ``timeout`` bounds the wait for the results.

    Each id is watched before its task is submitted, marked unconfirmed
    until accepted (the store may not know it yet, so no record of it
    means nothing until then).

    Raises:
        what a refused submission raises, or a result raises.
    """
    slots = [results.expect(submit.id, unconfirmed=True) for submit in submits]
    try:
        answers = [queue(submit) for submit in submits]
        for submit, answer in zip(submits, answers, strict=True):
            accepted_id(await answer.wait())
            results.confirm(submit.id)
        with anyio.fail_after(timeout):
            return [task_value(await slot.wait()) for slot in slots]
    finally:
        for submit, slot in zip(submits, slots, strict=True):
            results.forget(submit.id, slot)
