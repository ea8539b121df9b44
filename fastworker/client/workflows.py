"""``client.start(workflow)``: a workflow sent to the control plane's
Workflows actor in one message, answered once it is running; and
``client.workflow(id)`` / ``client.retry_workflow(id)``."""

from __future__ import annotations

from fastworker.client.coalescer import Coalescer
from fastworker.errors import InvalidSubmission, QueueFull
from fastworker.messages import (
    PRIORITIES,
    Accepted,
    Rejected,
    RetryWorkflow,
    StartWorkflow,
    WorkflowQuery,
    WorkflowState,
    WorkflowStep,
)
from fastworker.payload import pack_call
from fastworker.workflows.canvas import Part, Signature, Workflow, steps

__all__ = ["retry", "start", "state"]


async def start(queries: Coalescer, workflow: Part | Workflow, workflow_id: str, *,
                time_limit: float | None = None, keep_going: bool = False,
                on_error: Signature | None = None) -> str:
    """Start ``workflow`` as ``workflow_id`` (options: ``Client.start``);
    return the id.

    Raises:
        InvalidSubmission: the workflow is empty, or refused (too many steps...).
        QueueFull: the control plane runs as many workflows as it takes.
    """
    try:
        specs = steps(workflow)
    except ValueError as error:
        raise InvalidSubmission(str(error)) from None
    if on_error is not None and not isinstance(on_error, Signature):
        raise InvalidSubmission(f"on_error takes a step (task.s(...) or task.si(...)), not "
                                f"{type(on_error).__name__}")
    for priority in [spec.priority for spec in specs] + [
            on_error.priority if on_error is not None else None]:
        if priority is not None and priority not in PRIORITIES:
            raise InvalidSubmission(f"unknown priority {priority!r}; expected one of "
                                    f"{', '.join(PRIORITIES)}")
    handler = None
    if on_error is not None:
        handler = WorkflowStep(
            task=on_error.task, payload=pack_call(on_error.args, on_error.kwargs),
            input="none" if on_error.immutable else "one",
            priority=PRIORITIES.index(on_error.priority or "normal"), timeout=on_error.timeout)
    message = StartWorkflow(id=workflow_id, steps=tuple(
        WorkflowStep(task=spec.task, payload=spec.payload, after=spec.after, input=spec.input,
                     priority=PRIORITIES.index(spec.priority or "normal"), timeout=spec.timeout)
        for spec in specs), time_limit=time_limit, keep_going=keep_going, on_error=handler)
    return _accepted(await queries.ask(message))


async def retry(queries: Coalescer, workflow_id: str) -> str:
    """Run a failed or cancelled workflow again from where it stopped.

    Raises:
        InvalidSubmission: no such workflow is kept, or it is running or succeeded.
        QueueFull: the control plane runs as many workflows as it takes.
    """
    return _accepted(await queries.ask(RetryWorkflow(id=workflow_id)))


async def state(queries: Coalescer, workflow_id: str) -> WorkflowState:
    """Where the workflow stands, step by step (``state`` ``unknown``: not kept)."""
    answer = await queries.ask(WorkflowQuery(id=workflow_id))
    if isinstance(answer, Rejected):
        raise InvalidSubmission(answer.message)
    assert isinstance(answer, WorkflowState)
    return answer


def _accepted(answer: object) -> str:
    if isinstance(answer, Rejected):
        if answer.error == "QueueFull":
            raise QueueFull(answer.message)
        raise InvalidSubmission(answer.message)
    assert isinstance(answer, Accepted)
    return answer.id
