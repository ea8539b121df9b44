"""``client.start(workflow)``: a workflow sent to the control plane's
Workflows actor in one message, answered once it is running; and
``client.workflow(id)`` / ``client.retry_workflow(id)``."""

from __future__ import annotations

from fastworker.client.coalescer import Coalescer
from fastworker.client.outcome import accepted_id
from fastworker.messages import Rejected, RetryWorkflow, WorkflowQuery, WorkflowState
from fastworker.workflows.canvas import Part, Signature, Workflow
from fastworker.workflows.starting import start_message

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
    message = start_message(workflow, workflow_id, time_limit=time_limit,
                            keep_going=keep_going, on_error=on_error)
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
        accepted_id(answer)  # raises what it names (Unavailable: try again)
    assert isinstance(answer, WorkflowState)
    return answer


def _accepted(answer: object) -> str:
    return accepted_id(answer)  # UnknownTask, QueueFull, JournalUnavailable, InvalidSubmission
