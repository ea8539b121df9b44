"""What makes a ``StartWorkflow`` unfit to run, found before any step
does: its every step checked as the inbox checks a Submit, its graph, its
options (no trio, no peers: the task names and ids in use are asked of
the inbox and the store by the actor)."""

from __future__ import annotations

import math

from fastworker.limits import MAX_ID_LENGTH, check_text
from fastworker.messages import PRIORITIES, StartWorkflow, Submit
from fastworker.submission import check_submit
from fastworker.workflows.graph import error_step_id, step_id
from fastworker.workflows.state import WorkflowsOptions

__all__ = ["MAX_GENERATION", "check_start", "start_ids", "start_names"]

#: Retries of one workflow from a failure, at most (its steps' ids grow by
#: ``.<generation>``: the id limit counts it).
MAX_GENERATION = 999


def check_start(message: StartWorkflow, options: WorkflowsOptions) -> str | None:
    """What is wrong with a ``StartWorkflow`` (its every step checked
    as a Submit would be), or ``None``."""
    steps = message.steps
    # Room for its steps' ids, however often it is retried.
    suffix = max(len(step_id("", len(steps), MAX_GENERATION))
                 + len(f".m{options.max_steps}"),
                 len(error_step_id("", MAX_GENERATION)))
    problem = check_text("workflow id", message.id, MAX_ID_LENGTH - suffix, empty=False)
    if problem is not None:
        return problem
    if "." in message.id:
        return "a workflow id has no '.' (its steps' ids are <id>.<index>)"
    if not steps:
        return "a workflow needs at least one step"
    if len(steps) > options.max_steps:
        return (f"the workflow has {len(steps)} steps; the limit is "
                f"{options.max_steps} (max_steps)")
    edges = sum(len(step.after) for step in steps)
    if edges > options.max_edges:
        return (f"the workflow's steps wait for {edges} steps in all; the limit is "
                f"{options.max_edges} (max_edges)")
    for index, step in enumerate(steps):
        if not 0 <= step.priority < len(PRIORITIES):
            return f"step {index}: priority {step.priority} is not 0..3"
        # Checked as the inbox checks a Submit, before anything runs.
        problem = check_submit(Submit(id=step_id(message.id, index), task=step.task,
                                      payload=step.payload, priority=step.priority,
                                      timeout=step.timeout))
        if problem is not None:
            return f"step {index}: {problem}"
        if step.input not in ("none", "one", "list", "each"):
            return f"step {index}: input {step.input!r} is not none, one, list or each"
        if step.input == "each" and len(step.after) != 1:
            return f"step {index} maps over one step's result but waits for " \
                   f"{len(step.after)} steps"
        if any(not 0 <= parent < index for parent in step.after):
            return f"step {index} waits for a step that is not before it"
        if len(set(step.after)) != len(step.after):
            return f"step {index} waits for a step twice"
        if step.input == "one" and len(step.after) != 1:
            return f"step {index} takes one input but waits for {len(step.after)} steps"
    limit = message.time_limit
    if limit is not None and not (isinstance(limit, (int, float)) and 0 < limit < math.inf):
        return f"time_limit {limit:g} is not a number of seconds > 0"
    handler = message.on_error
    if handler is not None:
        if not 0 <= handler.priority < len(PRIORITIES):
            return f"on_error: priority {handler.priority} is not 0..3"
        problem = check_submit(Submit(id=error_step_id(message.id, MAX_GENERATION),
                                      task=handler.task, payload=handler.payload,
                                      priority=handler.priority, timeout=handler.timeout))
        if problem is not None:
            return f"on_error: {problem}"
        if handler.input not in ("none", "one") or handler.after:
            return "on_error: the handler waits for no step and takes the failure or nothing"
    return None


def start_names(message: StartWorkflow) -> list[str]:
    """The task names a workflow runs (its error handler's too)."""
    names = [step.task for step in message.steps]
    return names + [message.on_error.task] if message.on_error is not None else names


def start_ids(message: StartWorkflow) -> tuple[str, ...]:
    """A new workflow's id and its first steps' ids: all must be unused."""
    return (message.id, *(step_id(message.id, index) for index in range(len(message.steps))))
