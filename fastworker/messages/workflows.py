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
    #: Seconds the whole workflow may take (``None``: no limit); past it,
    #: it fails (``TimeLimitExceeded``) and its running steps are cancelled.
    time_limit: float | None = None
    #: A failing step stops only the steps that wait for it (directly or
    #: not); the other branches run on, and the workflow fails once they end.
    keep_going: bool = False
    #: A step submitted when the workflow fails, with (unless its ``input``
    #: is ``none``) a dict saying how as its first argument: ``workflow``,
    #: ``step``, ``task`` and ``error``.
    on_error: WorkflowStep | None = None


@attrs.frozen(kw_only=True)
class CancelWorkflow:
    """Client, dashboard -> Workflows: cancel the running workflow ``id``:
    its steps not yet started never run, those running are cancelled as a
    task's ``Cancel`` would, and its record ends ``cancelled``. Answered
    ``CancelReply`` (``cancelled``, or ``unknown`` for no running workflow)."""

    id: str


@attrs.frozen(kw_only=True)
class RetryWorkflow:
    """Client, dashboard -> Workflows: run the failed (or cancelled)
    workflow ``id`` again from where it stopped: the steps that succeeded
    keep their results and are not run again; the others run under new ids
    (``<id>.<index>.<generation>``). Its record goes back to ``queued``.
    Answered ``Accepted`` or ``Rejected`` (``InvalidSubmission``: not a
    workflow this control plane keeps, or one still running)."""

    id: str


@attrs.frozen(kw_only=True)
class WorkflowQuery:
    """Client, dashboard -> Workflows: where the workflow ``id`` stands,
    step by step. Answered ``WorkflowState`` (``state`` ``unknown`` for a
    workflow this control plane does not keep)."""

    id: str


@attrs.frozen(kw_only=True)
class StepInfo:
    """One step of a ``WorkflowState``.

    Attributes:
        index: its place in the workflow.
        task: its task's name.
        after: the steps it waits for.
        id: the task id of its latest run (``""``: it has not run).
        state: ``waiting``, ``skipped`` (it will not run: the workflow
            stopped), or the state of its task's record (``queued``,
            ``running``, ``succeeded``, ``failed``...).
        attempt, started_at, finished_at: of its latest run, from its record.
        error: its error as ``Type: message`` (``""``: none).
    """

    index: int
    task: str
    after: tuple[int, ...] = ()
    id: str = ""
    state: str = "waiting"
    attempt: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""


@attrs.frozen(kw_only=True)
class WorkflowState:
    """Workflows -> client: a workflow's state and each of its steps'.

    Attributes:
        state: ``running``, ``succeeded``, ``failed``, ``cancelled`` or
            ``unknown``.
        generation: how many times it was retried from a failure.
        started_at: when it was first started (wall clock).
        error: why it failed (``""``: it did not).
    """

    id: str
    state: str
    generation: int = 0
    started_at: float = 0.0
    error: str = ""
    steps: tuple[StepInfo, ...] = ()
