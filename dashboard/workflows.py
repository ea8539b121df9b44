"""The dashboard's workflow page and actions: asked of the Workflows actor
(``WorkflowQuery``, ``CancelWorkflow``, ``RetryWorkflow``) through the
dashboard actor's ``workflows`` ref."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from dashboard import schema, views
from dashboard.errors import ActionError
from fastworker.messages import (
    Accepted,
    CancelReply,
    CancelWorkflow,
    Rejected,
    RetryWorkflow,
    WorkflowQuery,
    WorkflowState,
)

__all__ = ["WorkflowActions"]

log = logging.getLogger("dashboard")


class WorkflowActions:
    """Args:
        name: the dashboard actor's name (for the log).
        call: asks the actor of a ref (``"workflows"``) and returns its
            answer (503 if it does not answer in time); ``None``: no
            Workflows actor is wired, and every page and action answers 503.
    """

    def __init__(self, name: str, call: Callable[[Any], Awaitable[Any]] | None) -> None:
        self.name = name
        self._call = call

    async def _ask(self, message: Any) -> Any:
        """The Workflows actor's answer (503 if none is wired, or it could
        not answer)."""
        if self._call is None:
            raise ActionError(503, "no Workflows actor is wired to the dashboard (its "
                              "workflows ref): workflow pages and actions are off")
        answer = await self._call(message)
        if isinstance(answer, Rejected) and answer.error == "Unavailable":
            raise ActionError(503, f"the workflows actor could not answer ({answer.message}); "
                              "try again")
        return answer

    async def _state(self, id: str) -> WorkflowState:
        state: WorkflowState = await self._ask(WorkflowQuery(id=id))
        if state.state == "unknown":
            raise ActionError(404, f"no workflow {id!r} is kept (unknown, not a workflow, "
                              "or an ended one let go: the Workflows actor's max_kept)")
        return state

    async def workflow(self, id: str) -> schema.WorkflowView:
        return views.workflow_view(await self._state(id))

    async def cancel(self, id: str) -> schema.CancelResult:
        reply: CancelReply = await self._ask(CancelWorkflow(id=id))
        if reply.outcome == "cancelled":
            log.info("%s: workflow %s cancelled from the dashboard", self.name, id)
            return schema.CancelResult(id=id, outcome=reply.outcome)
        state = await self._state(id)  # 404 if it is not kept either
        raise ActionError(409, f"workflow {id} is {state.state}: only a running workflow "
                          "can be cancelled")

    async def retry(self, id: str) -> schema.WorkflowView:
        answer = await self._ask(RetryWorkflow(id=id))
        if isinstance(answer, Rejected):
            if answer.error == "QueueFull":
                raise ActionError(503, f"the retry of workflow {id} was refused: "
                                  f"{answer.message}")
            await self._state(id)  # 404 if it is not kept
            raise ActionError(409, f"the retry of workflow {id} was refused: {answer.message}")
        assert isinstance(answer, Accepted)
        log.info("%s: workflow %s retried from the dashboard", self.name, id)
        try:
            return views.workflow_view(await self._state(id))
        except ActionError:  # retried all the same: the page's next load shows it
            return views.workflow_view(WorkflowState(id=id, state="running"))
