"""``fastworker tasks``, ``task``, ``submit`` and ``cancel``: tasks one by
one. Results and arguments are shown without unpickling anything
(``fastworker.peek``)."""

from __future__ import annotations

import argparse
import json
from typing import Any, get_args

from fastworker.client import Client
from fastworker.commands.common import EXIT, Usage, bounded, iso
from fastworker.errors import ResultUnknown, TaskError
from fastworker.limits import MAX_OFFSET, MAX_PAGE
from fastworker.messages import State, TaskRecord
from fastworker.peek import peek_value

__all__ = ["COMMANDS", "add_parsers", "record_json", "record_text"]

#: States after which ``cancel`` did what it was asked.
_CANCELLED = frozenset({"cancelled", "interrupted", "terminated", "abandoned", "requested"})


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``tasks``, ``task``, ``submit`` and ``cancel`` to the ``fastworker`` parser."""
    listing = commands.add_parser(
        "tasks", parents=[common], help="list the tasks the control plane holds, newest first")
    listing.add_argument("--state", choices=[s for s in get_args(State) if s != "unknown"],
                         help="only those in this state")
    listing.add_argument("--name", help="only those of this task name")
    listing.add_argument("--id", dest="id_part", metavar="PART",
                         help="only those whose id holds PART (a workflow's steps: ID.)")
    listing.add_argument("--limit", type=bounded(1, MAX_PAGE), default=20,
                         help=f"how many (default 20, at most {MAX_PAGE})")
    listing.add_argument("--offset", type=bounded(0, MAX_OFFSET), default=0,
                         help="skip this many first")
    task = commands.add_parser(
        "task", parents=[common], help="show a task's record: state, result or error, attempts")
    task.add_argument("id", help="the task id")
    submit = commands.add_parser(
        "submit", parents=[common], help="queue a task by name; print its id (or its result)")
    submit.add_argument("name", help="the task's name, e.g. myapp.tasks.resize")
    submit.add_argument("args", nargs="?", default="[]",
                        help="its positional arguments as a JSON array (a single JSON value "
                        "is one argument); default none")
    submit.add_argument("--kwargs", default="{}", help="its keyword arguments as a JSON object")
    submit.add_argument("--priority", choices=("critical", "high", "normal", "low"))
    submit.add_argument("--wait", type=float, metavar="SECONDS", nargs="?", const=60.0,
                        help="wait for the result, at most SECONDS (default 60)")
    cancel = commands.add_parser(
        "cancel", parents=[common], help="cancel tasks, queued, scheduled or running")
    cancel.add_argument("ids", nargs="+", metavar="ID", help="task ids")


async def _tasks(client: Client, args: argparse.Namespace) -> int:
    page = await client.list_tasks(state=args.state, task=args.name, id=args.id_part,
                                   limit=args.limit, offset=args.offset)
    if args.json:
        print(json.dumps({"total": page.total,
                          "tasks": [record_json(record) for record in page.records]}))
        return EXIT["ok"]
    for record in page.records:
        when = iso(record.finished_at or record.started_at or record.queued_at) or "-"
        print(f"{record.id}  {record.state:<9}  {when}  {record.task}  {record.worker or '-'}")
    shown = f"{args.offset + 1}-{args.offset + len(page.records)}" if page.records else "none"
    print(f"({shown} of {page.total} matching)")
    return EXIT["ok"]


async def _task(client: Client, args: argparse.Namespace) -> int:
    record = await client.status(args.id)
    if args.json:
        print(json.dumps(record_json(record)))
    else:
        print(record_text(record))
    return EXIT["no"] if record.state == "unknown" else EXIT["ok"]


async def _submit(client: Client, args: argparse.Namespace) -> int:
    try:
        positional = json.loads(args.args)
        keywords = json.loads(args.kwargs)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, a huge integer, nesting
        raise Usage(f"arguments must be JSON: {error}") from None
    if not isinstance(positional, list):
        positional = [positional]
    if not isinstance(keywords, dict):
        raise Usage("--kwargs must be a JSON object")
    task_id = await client.send(args.name, positional, keywords, priority=args.priority)
    if args.wait is None:
        print(json.dumps({"id": task_id}) if args.json else task_id)
        return EXIT["ok"]
    try:
        await client.result(task_id, timeout=args.wait)
    except TimeoutError:
        record = await client.status(task_id)
        print(json.dumps(record_json(record)) if args.json else
              f"{task_id}: still {record.state} after {args.wait:g} s")
        return EXIT["no"]
    except (TaskError, ResultUnknown):
        pass  # the record says how it ended
    record = await client.status(task_id)
    print(json.dumps(record_json(record)) if args.json else record_text(record))
    return EXIT["ok"] if record.state == "succeeded" else EXIT["no"]


async def _cancel(client: Client, args: argparse.Namespace) -> int:
    worst = EXIT["ok"]
    for task_id in args.ids:
        outcome = await client.cancel(task_id)
        print(json.dumps({"id": task_id, "outcome": outcome}) if args.json
              else f"{task_id}: {outcome}")
        if outcome not in _CANCELLED:
            worst = EXIT["no"]
    return worst


def record_json(record: TaskRecord) -> dict[str, Any]:
    """A record as plain JSON data: times as ISO 8601, the value as text."""
    error = record.error
    return {
        "id": record.id, "task": record.task, "state": record.state,
        "attempt": record.attempt, "worker": record.worker, "workers": list(record.workers),
        "queued_at": iso(record.queued_at), "started_at": iso(record.started_at),
        "finished_at": iso(record.finished_at),
        "value": None if record.value is None else peek_value(record.value),
        "error": None if error is None else {
            "type": error.type, "message": error.message, "traceback": error.traceback,
            "kind": error.kind},
        "attempts": [{"attempt": a.attempt, "worker": a.worker,
                      "error": None if a.error is None else f"{a.error.type}: {a.error.message}"}
                     for a in record.attempts],
    }


def record_text(record: TaskRecord) -> str:
    """A record for people, one field per line."""
    if record.state == "unknown":
        message = record.error.message if record.error else (
            f"the control plane has no record of task {record.id}: it was never submitted "
            f"there, or its record expired or was dropped (docs/results.md#bounds)")
        return f"{record.id}: unknown: {message}"
    data = record_json(record)
    lines = [f"{record.id}  {record.task}  {record.state}"]
    for key in ("attempt", "worker", "queued_at", "started_at", "finished_at", "value"):
        if data[key] not in (None, "", 0):
            lines.append(f"  {key}: {data[key]}")
    for attempt in data["attempts"]:
        lines.append(f"  attempt {attempt['attempt']} on {attempt['worker']}: {attempt['error']}")
    error = record.error
    if error is not None:
        lines.append(f"  error: {error.type}: {error.message}")
        if error.traceback:
            lines.extend("    " + line for line in error.traceback.rstrip().splitlines())
    return "\n".join(lines)


#: Each command's function, by name.
COMMANDS = {"tasks": _tasks, "task": _task, "submit": _submit, "cancel": _cancel}
