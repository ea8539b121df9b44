"""The ``fastworker`` commands that talk to a running control plane:
``tasks``, ``task``, ``submit`` and ``cancel``. Each is a ``Client`` call, so it works
wherever a client does (the authenticated protocol on the query and
submission ports, never the dashboard's HTTP), with the client's
environment (``FASTWORKER_ADDRESS``, ``FASTWORKER_SECRET``,
``FASTWORKER_SECRET_FILE``, ``FASTWORKER_TLS_*``) or ``--address`` and
``--secret-file``.

Exit codes (``EXIT``): 0 done; 1 the answer is "no" (an unknown task id,
a failed task, a submission refused, a task that could not be
cancelled); 2 a usage error; 3 no answer from the control plane.

Every command prints text for people, or with ``--json`` one JSON object
(or one per line) for scripts. Results and arguments are shown without
unpickling anything (``fastworker.peek``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import trio

from actors.errors import ConfigError
from fastworker.client import Client
from fastworker.errors import ConnectionLost, FastworkerError, ResultUnknown, TaskError
from fastworker.limits import MAX_OFFSET, MAX_PAGE
from fastworker.messages import State, TaskRecord
from fastworker.peek import peek_value

__all__ = ["EXIT", "add_commands", "common_options", "exit_codes_help", "record_json",
           "record_text", "run_command"]

#: What each exit code means.
EXIT = {"ok": 0, "no": 1, "usage": 2, "unreachable": 3}
#: States after which ``cancel`` did what it was asked.
_CANCELLED = frozenset({"cancelled", "interrupted", "terminated", "abandoned", "requested"})


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``tasks``, ``task``, ``submit`` and ``cancel`` to the ``fastworker`` parser."""
    listing = commands.add_parser(
        "tasks", parents=[common], help="list the tasks the control plane holds, newest first")
    listing.add_argument("--state", choices=[s for s in get_args(State) if s != "unknown"],
                         help="only those in this state")
    listing.add_argument("--name", help="only those of this task name")
    listing.add_argument("--limit", type=_bounded(1, MAX_PAGE), default=20,
                         help=f"how many (default 20, at most {MAX_PAGE})")
    listing.add_argument("--offset", type=_bounded(0, MAX_OFFSET), default=0,
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


def common_options() -> argparse.ArgumentParser:
    """The options every command that talks to a control plane takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", help="the control plane's base address (default "
                        "$FASTWORKER_ADDRESS, else tcp://127.0.0.1:5555)")
    common.add_argument("--secret-file", help="a file holding the shared secret (default "
                        "$FASTWORKER_SECRET / $FASTWORKER_SECRET_FILE, else the per-host secret)")
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return common


def run_command(args: argparse.Namespace) -> int:
    """Run ``tasks``, ``task``, ``submit`` or ``cancel``; return the exit code."""
    secret = None
    if args.secret_file:
        try:
            secret = Path(args.secret_file).read_text().strip()
        except OSError as error:
            print(f"--secret-file {args.secret_file}: cannot read: {error.strerror}",
                  file=sys.stderr)
            return EXIT["usage"]
    command: Callable[[Client, argparse.Namespace], Any] = {
        "tasks": _tasks, "task": _task, "submit": _submit, "cancel": _cancel}[args.command]

    async def main() -> int:
        async with Client(args.address, secret) as client:
            return int(await command(client, args))

    try:
        return trio.run(main)
    except ConnectionLost as error:  # before OSError: it is a ConnectionError
        print(f"fastworker {args.command}: {error}", file=sys.stderr)
        return EXIT["unreachable"]
    except (ConfigError, OSError) as error:  # an address NNG cannot dial, say
        print(f"fastworker {args.command}: {error}", file=sys.stderr)
        return EXIT["usage"]
    except _Usage as error:
        print(f"fastworker {args.command}: {error}", file=sys.stderr)
        return EXIT["usage"]
    except FastworkerError as error:  # refused: a bad submission, say
        print(f"fastworker {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT["no"]


class _Usage(Exception):
    """A mistake in the command's arguments that only running it shows."""


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer within ``low..high``."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within {low}..{high}")
        return value
    return parse


async def _tasks(client: Client, args: argparse.Namespace) -> int:
    page = await client.list_tasks(state=args.state, task=args.name, limit=args.limit,
                                   offset=args.offset)
    if args.json:
        print(json.dumps({"total": page.total,
                          "tasks": [record_json(record) for record in page.records]}))
        return EXIT["ok"]
    for record in page.records:
        when = _iso(record.finished_at or record.started_at or record.queued_at) or "-"
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
        raise _Usage(f"arguments must be JSON: {error}") from None
    if not isinstance(positional, list):
        positional = [positional]
    if not isinstance(keywords, dict):
        raise _Usage("--kwargs must be a JSON object")
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
        "queued_at": _iso(record.queued_at), "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
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


def _iso(wall: float) -> str | None:
    return (datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")
            if wall else None)


def exit_codes_help() -> str:
    """The exit codes, for ``--help``."""
    return ("exit codes: 0 done; 1 the answer is no (unknown id, failed task, refused "
            "submission, not cancelled); 2 usage error; 3 no control plane answered")
