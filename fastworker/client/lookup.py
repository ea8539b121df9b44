"""Asking the control plane about tasks by id, listing them, cancelling
them: the queries behind ``Client.status``, ``list_tasks`` and ``cancel``."""

from __future__ import annotations

from fastworker.cancel import cancel_task
from fastworker.client.coalescer import Coalescer
from fastworker.errors import InvalidSubmission
from fastworker.limits import MAX_ID_LENGTH, check_text
from fastworker.messages import ListTasks, Records, Rejected, StatusQuery, TaskPage, TaskRecord

__all__ = ["cancel", "list_tasks", "status"]


def _checked(task_id: str) -> str:
    """``task_id``, or ``InvalidSubmission`` if no task can have it (the
    control plane would refuse the query)."""
    if len(task_id) > MAX_ID_LENGTH:
        raise InvalidSubmission(check_text("task id", task_id, MAX_ID_LENGTH))
    return task_id


async def status(queries: Coalescer, task_id: str) -> TaskRecord:
    reply = await queries.ask(StatusQuery(ids=(_checked(task_id),)))
    assert isinstance(reply, Records)
    return reply.records[0]


async def list_tasks(queries: Coalescer, query: ListTasks) -> TaskPage:
    reply = await queries.ask(query)
    if isinstance(reply, Rejected):
        raise InvalidSubmission(reply.message)
    assert isinstance(reply, TaskPage)
    return reply


async def cancel(queries: Coalescer, task_id: str) -> str:
    reply = await cancel_task(_checked(task_id), at_inbox=queries.ask,
                              at_dispatcher=queries.ask, at_workflows=queries.ask)
    return reply.outcome
