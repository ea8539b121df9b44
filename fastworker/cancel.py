"""Cancelling a task: the one conversation, for the client and the dashboard.

A task is cancelled where it waits, else stopped where it runs: ``Cancel``
to the inbox (queued or scheduled); if the inbox answers ``not_queued`` (it
was handed out), ``Stop`` to the dispatcher. An id the inbox never had may
be a running workflow's: ``CancelWorkflow`` to the Workflows actor. The
caller says how each message travels (a request wire, or an in-process call).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastworker.errors import Unavailable
from fastworker.messages import Cancel, CancelReply, CancelWorkflow, Rejected, Stop

__all__ = ["cancel_task"]



async def cancel_task(
    task_id: str,
    *,
    at_inbox: Callable[[Cancel], Awaitable[Any]],
    at_dispatcher: Callable[[Stop], Awaitable[Any]],
    at_workflows: Callable[[CancelWorkflow], Awaitable[Any]] | None = None,
) -> CancelReply:
    """Cancel a task where it waits, else stop it where it runs: ``Cancel``
    to the inbox (queued or scheduled), and if it answers ``not_queued``
    (handed out already), ``Stop`` to the dispatcher; an id the inbox does
    not know, to the Workflows actor (``at_workflows``), as a workflow's.

    Raises:
        Unavailable: the Workflows actor could not act now.
    """
    reply = await at_inbox(Cancel(id=task_id))
    assert isinstance(reply, CancelReply)
    if reply.outcome == "not_queued":
        reply = await at_dispatcher(Stop(id=task_id))
        assert isinstance(reply, CancelReply)
    elif reply.outcome == "unknown" and at_workflows is not None:
        reply = await at_workflows(CancelWorkflow(id=task_id))
        if isinstance(reply, Rejected):  # it could not act now (a peer did not answer)
            raise Unavailable(f"the workflows actor could not cancel {task_id}: "
                              f"{reply.message}")
        assert isinstance(reply, CancelReply)
    return reply
