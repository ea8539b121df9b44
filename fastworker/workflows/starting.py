"""A workflow as the ``StartWorkflow`` the control plane runs, for a
client's ``start`` and for a periodic workflow (``periodic``), which the
control plane's scheduler starts on a schedule like a periodic task."""

from __future__ import annotations

import datetime
from typing import Any

import attrs

from fastworker.errors import InvalidSubmission
from fastworker.messages import PRIORITIES, StartWorkflow, WorkflowStep
from fastworker.payload import pack_call
from fastworker.tasks import Task, default_registry, task
from fastworker.workflows.canvas import Part, Signature, Workflow, steps

__all__ = ["periodic", "start_message"]


def start_message(workflow: Part | Workflow, workflow_id: str, *,
                  time_limit: float | None = None, keep_going: bool = False,
                  on_error: Signature | None = None) -> StartWorkflow:
    """The ``StartWorkflow`` of ``workflow`` (options: ``Client.start``).

    Raises:
        InvalidSubmission: the workflow is empty or malformed, or an option is.
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
    return StartWorkflow(id=workflow_id, steps=tuple(
        WorkflowStep(task=spec.task, payload=spec.payload, after=spec.after, input=spec.input,
                     priority=PRIORITIES.index(spec.priority or "normal"), timeout=spec.timeout)
        for spec in specs), time_limit=time_limit, keep_going=keep_going, on_error=handler)


def periodic(name: str, workflow: Part | Workflow, *, cron: str | None = None,
             every: float | datetime.timedelta | None = None, **options: Any) -> Task[[], None]:
    """Have the control plane start ``workflow`` on a schedule, as a
    periodic task runs (``cron=`` or ``every=``, the same rules: no
    overlap, missed runs not made up; docs/tasks.md). ``options`` are
    ``Client.start``'s (``time_limit``, ``keep_going``, ``on_error``).
    Each run is a workflow of its own id; ``name`` is the schedule's.

    Raises:
        TypeError: no schedule, a bad one, or a malformed workflow.
    """
    if cron is None and every is None:
        raise TypeError("a periodic workflow takes cron= or every=")
    try:
        message = start_message(workflow, "", **options)
    except InvalidSubmission as error:
        raise TypeError(f"periodic workflow {name}: {error}") from None

    def started_by_the_scheduler() -> None:
        raise TypeError(f"{name} is a periodic workflow: the control plane's scheduler "
                        "starts it (client.start runs a workflow yourself)")

    registry = default_registry()
    made: Task[[], None] = task(name=name, cron=cron, every=every)(started_by_the_scheduler)
    registry.unregister(name)
    made = attrs.evolve(made, workflow=message)
    registry.register(made)
    return made
