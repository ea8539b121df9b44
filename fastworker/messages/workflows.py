"""Workflows on the wire: a client starts one on the queries port (base+4);
the control plane's Workflows actor runs its steps. Part of the wire spec:
see ``fastworker.messages``."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class WorkflowStep:
    """One step of a ``StartWorkflow``.

    Attributes:
        task: the task's name.
        payload: its call's pickled arguments.
        after: the steps (indexes, each before this one) it waits for, in
            the order their results are passed.
        input: how it takes their results: ``none``, ``one`` (the one
            parent's result as its first argument) or ``list`` (every
            parent's result, in a list, as its first argument).
        priority: its priority level (0 critical .. 3 low).
        timeout: its time limit in seconds (``None``: none).
    """

    task: str
    payload: bytes
    after: tuple[int, ...] = ()
    input: str = "none"
    priority: int = 2
    timeout: float | None = None


@attrs.frozen(kw_only=True)
class StartWorkflow:
    """Client -> Workflows: run ``steps`` as the workflow ``id``; answered
    ``Accepted`` (also for a resent one) or ``Rejected``. The workflow's
    record is a task's record under ``id``: its result is its last step's,
    or its error names the step that failed."""

    id: str
    steps: tuple[WorkflowStep, ...]


@attrs.frozen(kw_only=True)
class CancelWorkflow:
    """Client, dashboard -> Workflows: cancel the running workflow ``id``:
    its steps not yet started never run, those running are cancelled as a
    task's ``Cancel`` would, and its record ends ``cancelled``. Answered
    ``CancelReply`` (``cancelled``, or ``unknown`` for no running workflow)."""

    id: str
