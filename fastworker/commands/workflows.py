"""``fastworker workflow ID``: where a workflow stands, step by step, and
``--retry`` (from where it stopped) or ``--cancel``.

One command with action flags, as ``drain WORKER --resume`` is: the thing
acted on is one workflow, named once, and the view is what the operator
looks at before and after acting. A workflow's own record (its result or
error, like a task's) is ``fastworker task ID``; its steps' records are
``fastworker task ID.INDEX``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fastworker.client import Client
from fastworker.commands.common import EXIT, iso, table
from fastworker.messages import StepInfo, WorkflowState

__all__ = ["COMMANDS", "add_parsers", "workflow_json", "workflow_text"]

#: The order a workflow's step counts are shown in: how far along first.
_STEP_STATES = ("waiting", "scheduled", "queued", "running", "succeeded", "failed",
                "cancelled", "expired", "skipped")
#: The most characters of a step's error the table shows (``--json`` has it whole).
ERROR_WIDTH = 60
#: The most characters of a step's "waits for" the table shows, else a count.
AFTER_WIDTH = 16


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``workflow`` to the ``fastworker`` parser."""
    workflow = commands.add_parser(
        "workflow", parents=[common],
        help="show a workflow: its state and each step's; --retry or --cancel it")
    workflow.add_argument("id", help="the workflow's id (fastworker tasks --name "
                          "fastworker.workflow lists them)")
    action = workflow.add_mutually_exclusive_group()
    action.add_argument("--retry", action="store_true",
                        help="run a failed or cancelled workflow again from where it "
                        "stopped: the steps that succeeded keep their results")
    action.add_argument("--cancel", action="store_true",
                        help="cancel a running workflow: nothing more starts, its "
                        "running steps are cancelled")


async def _workflow(client: Client, args: argparse.Namespace) -> int:
    if args.retry:
        return await _retry(client, args)
    if args.cancel:
        return await _cancel(client, args)
    state = await client.workflow(args.id)
    print(json.dumps(workflow_json(state)) if args.json else workflow_text(state))
    return EXIT["no"] if state.state == "unknown" else EXIT["ok"]


async def _retry(client: Client, args: argparse.Namespace) -> int:
    # Asked first only to say which steps run again: the control plane
    # decides, and a refusal (InvalidSubmission: unknown, running,
    # succeeded) is its message on stderr, exit 1 (run_command).
    before = await client.workflow(args.id)
    await client.retry_workflow(args.id)
    again = [step.index for step in before.steps if step.state != "succeeded"]
    kept = len(before.steps) - len(again)
    retry = before.generation + 1
    if args.json:
        print(json.dumps({"id": args.id, "outcome": "retried", "retry": retry,
                          "again": again}))
    else:
        runs = (f"{_steps(len(again))} {_indexes(again)} "
                f"{'runs' if len(again) == 1 else 'run'} again" if again
                else "no step runs again")
        print(f"{args.id}: retried (retry {retry}): {runs}"
              + (f"; {kept} succeeded {_steps(kept)} "
                 f"{'keeps its result' if kept == 1 else 'keep their results'}" if kept
                 else ""))
    return EXIT["ok"]


async def _cancel(client: Client, args: argparse.Namespace) -> int:
    # Only a running workflow is cancelled: ``client.cancel`` would cancel
    # a task of that id too, which is not what ``workflow`` was asked.
    state = await client.workflow(args.id)
    if state.state == "running":
        outcome = await client.cancel(args.id)
        if outcome == "cancelled":
            print(json.dumps({"id": args.id, "outcome": outcome}) if args.json
                  else f"{args.id}: cancelled")
            return EXIT["ok"]
        state = await client.workflow(args.id)  # it ended meanwhile: how?
    if state.state == "unknown":
        print(json.dumps(workflow_json(state)) if args.json else workflow_text(state))
    elif args.json:
        print(json.dumps({"id": args.id, "outcome": "not_running", "state": state.state}))
    else:
        print(f"{args.id}: not cancelled: the workflow is not running (it ended "
              f"{state.state})")
    return EXIT["no"]


def workflow_json(state: WorkflowState) -> dict[str, Any]:
    """A ``WorkflowState`` as plain JSON data: times as ISO 8601, ``retries``
    for its generation, ``null`` for what a step has not had yet."""
    return {
        "id": state.id, "state": state.state, "retries": state.generation,
        "started_at": iso(state.started_at), "error": state.error or None,
        "steps": [{
            "index": step.index, "task": step.task, "after": list(step.after),
            "id": step.id or None, "state": step.state, "attempt": step.attempt or None,
            "started_at": iso(step.started_at), "finished_at": iso(step.finished_at),
            "duration": _duration(step), "error": step.error or None,
        } for step in state.steps],
    }


def workflow_text(state: WorkflowState) -> str:
    """A workflow for people: its state line, its error, a table of its steps."""
    if state.state == "unknown":
        return (f"{state.id}: unknown: the control plane keeps no workflow {state.id}: none "
                "was started there, or it ended and was let go (max_kept); "
                f"`fastworker task {state.id}` shows its record while the store holds it")
    counts = {name: sum(1 for step in state.steps if step.state == name)
              for name in (*_STEP_STATES, *sorted({step.state for step in state.steps}
                                                  - set(_STEP_STATES)))}
    lines = [f"{state.id}  {state.state}  retries {state.generation}  "
             f"{len(state.steps)} {_steps(len(state.steps))}: "
             + ", ".join(f"{count} {name}" for name, count in counts.items() if count)
             + (f"  started {iso(state.started_at)}" if state.started_at else "")]
    if state.error:
        lines.append(f"  error: {state.error}")
    errors = any(step.error for step in state.steps)  # else no ERROR column
    rows = [("STEP", "TASK", "WAITS FOR", "STATE", "TASK ID", "ATTEMPT", "TOOK",
             *(("ERROR",) if errors else ()))]
    for step in state.steps:
        took = _duration(step)
        rows.append((str(step.index), step.task, _after(step.after), step.state,
                     step.id or "-", str(step.attempt) if step.attempt else "-",
                     "-" if took is None else _seconds(took),
                     *((_shorten(step.error),) if errors else ())))
    lines.append(table(rows))
    if state.state in ("failed", "cancelled"):
        lines.append(f"(`fastworker task TASK-ID` shows a step's traceback; "
                     f"`fastworker workflow {state.id} --retry` runs it again from where it "
                     "stopped)")
    return "\n".join(lines)


def _duration(step: StepInfo) -> float | None:
    """How long the step's latest run took, once it ended (its worker's clock
    both times: the clock of the host asking is not compared with it)."""
    if not (step.started_at and step.finished_at):
        return None
    return round(max(step.finished_at - step.started_at, 0.0), 3)


def _seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60}m"


def _after(after: tuple[int, ...]) -> str:
    """The steps a step waits for, as ranges (``0-19, 25``), or a count
    when that is still long (a fan-in of thousands)."""
    if not after:
        return "-"
    text = _indexes(after)
    return text if len(text) <= AFTER_WIDTH else f"{len(after)} steps"


def _indexes(indexes: list[int] | tuple[int, ...]) -> str:
    """Step indexes as ranges: ``0-3, 7, 9-10``."""
    ranges: list[list[int]] = []
    for index in sorted(indexes):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def _shorten(error: str) -> str:
    """A step's error on one line of at most ``ERROR_WIDTH`` characters."""
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line if len(line) <= ERROR_WIDTH else line[:ERROR_WIDTH - 3] + "..."


def _steps(count: int) -> str:
    return "step" if count == 1 else "steps"


#: Each command's function, by name.
COMMANDS = {"workflow": _workflow}
