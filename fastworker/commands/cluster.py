"""``fastworker status``, ``workers``, ``watch``, ``purge``, ``retry`` and
``drain``: the cluster as a whole, through ``client.admin``."""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
from typing import Any

import attrs
import trio

from fastworker.client import Client
from fastworker.commands.common import EXIT, Usage, iso, table
from fastworker.errors import ConnectionLost
from fastworker.limits import MAX_BULK
from fastworker.messages import PRIORITIES, ClusterStatus, WorkerStatus

__all__ = ["COMMANDS", "add_parsers", "status_json", "status_text", "workers_text"]

#: What ``watch`` clears the terminal with before each refresh.
_CLEAR = "\x1b[H\x1b[2J"
#: Seconds without an answer after which ``watch`` gives up (exit 3).
WATCH_GIVE_UP = 30.0


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``status``, ``workers``, ``watch``, ``purge``, ``retry`` and ``drain``."""
    commands.add_parser(
        "status", parents=[common],
        help="the control plane now: queue per priority, in flight, throughput, workers, "
        "journal")
    commands.add_parser(
        "workers", parents=[common],
        help="every worker: the control plane's own and each subworker, with its health")
    watch = commands.add_parser(
        "watch", parents=[common],
        help="status and workers on one screen, refreshed until Ctrl-C")
    watch.add_argument("--interval", type=float, default=1.0,
                       help="seconds between refreshes (default 1)")
    watch.add_argument("--count", type=int, default=0,
                       help="stop after this many refreshes (default: until Ctrl-C)")
    purge = commands.add_parser(
        "purge", parents=[common],
        help="cancel every queued task (of a priority, of a task name); needs --yes")
    purge.add_argument("--priority", choices=PRIORITIES, help="only tasks of this priority")
    purge.add_argument("--name", help="only tasks of this task name")
    purge.add_argument("--scheduled", action="store_true",
                       help="also the tasks held for later (countdown, eta, retry backoff)")
    purge.add_argument("--yes", action="store_true",
                       help="do it (without it, nothing is purged)")
    retry = commands.add_parser(
        "retry", parents=[common],
        help="run tasks again as new tasks with the same arguments: the ids given, or "
        "--failed")
    retry.add_argument("ids", nargs="*", metavar="ID",
                       help="failed, cancelled or expired task ids")
    retry.add_argument("--failed", action="store_true",
                       help="every failed task not yet retried (of --name)")
    retry.add_argument("--name", help="with --failed: only tasks of this task name")
    drain = commands.add_parser(
        "drain", parents=[common],
        help="give a worker no new tasks (what it runs finishes); --resume to undo")
    drain.add_argument("worker", help="the worker's id (fastworker workers lists them)")
    drain.add_argument("--resume", action="store_true", help="give it tasks again")


async def _status(client: Client, args: argparse.Namespace) -> int:
    status = await client.admin.status()
    print(json.dumps(status_json(status)) if args.json else status_text(status))
    return EXIT["ok"]


async def _workers(client: Client, args: argparse.Namespace) -> int:
    status = await client.admin.status()
    if args.json:
        print(json.dumps([_worker_json(w) for w in status.workers]))
    else:
        print(workers_text(status.workers))
    return EXIT["ok"]


async def _watch(client: Client, args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise Usage("--interval must be more than 0 seconds")
    screen = sys.stdout.isatty() and not args.json
    shown = 0
    patience = max(5.0, 3 * args.interval)
    silent_since: float | None = None
    while not args.count or shown < args.count:
        with trio.move_on_after(patience) as waited:
            status = await client.admin.status()
        if waited.cancelled_caught:
            now = trio.current_time()
            silent_since = now - patience if silent_since is None else silent_since
            if now - silent_since >= WATCH_GIVE_UP:
                raise ConnectionLost(f"no answer from the control plane for "
                                     f"{now - silent_since:.0f} s")
            print(f"no answer from the control plane for {now - silent_since:.0f} s; "
                  "still asking", file=sys.stderr, flush=True)
            continue
        silent_since = None
        if args.json:
            print(json.dumps(status_json(status)), flush=True)
        else:
            rows = shutil.get_terminal_size().lines
            text = status_text(status) + "\n\n" + workers_text(status.workers)
            lines = text.splitlines()
            if screen and len(lines) > rows - 1:
                lines = lines[:rows - 2] + [f"... ({len(lines) - rows + 2} more lines)"]
            print((_CLEAR if screen else "") + "\n".join(lines), flush=True)
            if not screen:
                print(flush=True)
        shown += 1
        if not args.count or shown < args.count:
            await trio.sleep(args.interval)
    return EXIT["ok"]


async def _purge(client: Client, args: argparse.Namespace) -> int:
    which = _which(args.priority, args.name, args.scheduled)
    if not args.yes:
        queued = (await client.admin.status()).queued
        count = (queued[PRIORITIES.index(args.priority)] if args.priority else sum(queued))
        raise Usage(f"this cancels {which} ({count:,} queued now"
                    f"{' at that priority' if args.priority else ''}"
                    f"{', of every name' if args.name else ''}); add --yes to do it")
    count = await client.admin.purge(priority=args.priority, task=args.name,
                                     scheduled=args.scheduled)
    print(json.dumps({"purged": count}) if args.json else f"purged {count} tasks ({which})")
    return EXIT["ok"]


def _which(priority: str | None, name: str | None, scheduled: bool) -> str:
    what = "every queued" + (" or scheduled" if scheduled else "") + " task"
    if priority:
        what += f" of priority {priority}"
    if name:
        what += f" named {name}"
    return what


async def _retry(client: Client, args: argparse.Namespace) -> int:
    if bool(args.ids) == args.failed:
        raise Usage("give task ids, or --failed (not both)")
    if args.name and not args.failed:
        raise Usage("--name goes with --failed")
    retried: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    nonce = secrets.token_hex(4)  # one operation: its retries' ids end so
    remaining = 0
    if args.failed:
        # MAX_BULK at a time, until none is left or some are refused; only
        # tasks queued before the first ask, so that retries this command
        # made, should they fail already, are not retried again.
        before = 0.0
        while True:
            report = await client.admin.retry(failed=True, task=args.name, limit=MAX_BULK,
                                              before=before, nonce=nonce)
            before, remaining = report.before, report.remaining
            retried.extend(report.retried)
            refused.extend(report.refused)
            if not report.remaining or not report.retried or report.refused:
                break
    else:
        for start in range(0, len(args.ids), MAX_BULK):
            report = await client.admin.retry(args.ids[start:start + MAX_BULK], nonce=nonce)
            retried.extend(report.retried)
            refused.extend(report.refused)
    if args.json:
        print(json.dumps({"retried": [{"id": old, "new_id": new} for old, new in retried],
                          "refused": [{"id": id, "why": why} for id, why in refused],
                          "not_tried": remaining}))
    else:
        for old, new in retried:
            print(f"{old} -> {new}")
        for id, why in refused:
            print(f"{id}: not retried: {why}")
        if not retried and not refused:
            print("no failed tasks to retry" + (f" named {args.name}" if args.name else ""))
        elif len(retried) > 1:
            print(f"({len(retried)} retried)")
        if remaining:
            print(f"{remaining:,} more failed tasks were not tried (stopped at a refusal): "
                  "run it again once the cause is gone")
    return EXIT["no"] if refused or remaining else EXIT["ok"]


async def _drain(client: Client, args: argparse.Namespace) -> int:
    outcome = await client.admin.drain(args.worker, resume=args.resume)
    if args.json:
        print(json.dumps({"worker": args.worker, "outcome": outcome}))
    elif outcome == "unknown":
        print(f"{args.worker}: no such live worker (fastworker workers lists them)")
    else:
        print(f"{args.worker}: {outcome}")
    return EXIT["no"] if outcome == "unknown" else EXIT["ok"]


def status_json(status: ClusterStatus) -> dict[str, Any]:
    """A ``ClusterStatus`` as plain JSON data: times as ISO 8601 too."""
    data = attrs.asdict(status)
    data["queued"] = dict(zip(PRIORITIES, status.queued, strict=True))
    data["rates"] = dict(zip(("accepted", "succeeded", "failed"), status.rates, strict=True))
    data["started_at"], data["now"] = iso(status.started_at), iso(status.now)
    data["uptime"] = round(max(status.now - status.started_at, 0.0), 3)
    data["journal"]["last_commit_at"] = iso(status.journal.last_commit_at)
    data["workers"] = [_worker_json(w) for w in status.workers]
    return data


def _worker_json(worker: WorkerStatus) -> dict[str, Any]:
    data = attrs.asdict(worker)
    data["slots"] = sum(worker.slots)
    data["slots_by_kind"] = dict(zip(("async", "thread", "process"), worker.slots, strict=True))
    return data


def status_text(status: ClusterStatus) -> str:
    """A ``ClusterStatus`` for people, one topic per line."""
    queued = status.queued
    live = [w for w in status.workers if w.health in ("alive", "suspect")]
    health = {h: sum(1 for w in status.workers if w.health == h)
              for h in ("alive", "suspect", "lost", "left")}
    journal = status.journal
    if not journal.enabled:
        journal_line = "off: the queue and results are lost if the control plane stops"
    else:
        journal_line = (f"{journal.path}, {_size(journal.bytes)}, "
                        + ("healthy" if journal.healthy else f"FAILING: {journal.last_error}")
                        + f", {journal.pending_ops} ops pending")
    accepted, succeeded, failed = status.rates
    return "\n".join([
        f"{status.node}  fastworker {status.version}  up "
        f"{_duration(status.now - status.started_at)}",
        "queue       " + "  ".join(f"{name} {count:,}" for name, count
                                   in zip(PRIORITIES, queued, strict=True))
        + f"  ({sum(queued):,} of {status.capacity:,}; {status.scheduled:,} scheduled"
        + (f"; {status.waiting_for_room:,} waiting for room" if status.waiting_for_room else "")
        + ")",
        f"in flight   {status.in_flight:,}"
        + (f" ({status.unplaced:,} waiting for a worker that can run them)"
           if status.unplaced else ""),
        f"throughput  {accepted:,.1f}/s accepted, {succeeded:,.1f}/s succeeded, "
        f"{failed:,.1f}/s failed (last {status.rate_window:g} s)",
        f"since start {status.accepted_total:,} accepted, {status.succeeded_total:,} succeeded, "
        f"{status.failed_total:,} failed, {status.cancelled_total:,} cancelled, "
        f"{status.expired_total:,} expired",
        f"workers     {health['alive']} alive, {health['suspect']} suspect, "
        f"{health['lost']} lost, {health['left']} left; "
        f"{sum(sum(w.slots) for w in live):,} slots, {sum(w.running for w in live):,} running, "
        f"{sum(w.waiting for w in live):,} waiting, {sum(w.free for w in live):,} free",
        f"journal     {journal_line}",
        f"store       {status.stored:,} records, {_size(status.stored_bytes)}",
    ])


def workers_text(workers: tuple[WorkerStatus, ...]) -> str:
    """Workers as a table for people."""
    rows = [("WORKER", "WHERE", "HEALTH", "SLOTS", "RUNNING", "WAITING", "FREE",
             "SUCCEEDED", "FAILED", "HEARD")]
    for w in workers:
        health = w.health + (" (drained)" if w.drained else "")
        if w.reason:
            health += f": {w.reason}"
        heard = ("-" if w.local or w.health in ("lost", "left")
                 else f"{w.silent_for:.1f} s ago")
        rows.append((w.worker, "local" if w.local else f"{w.host}:{w.pid}", health,
                     str(sum(w.slots)), str(w.running), str(w.waiting), str(w.free),
                     str(w.succeeded_total), str(w.failed_total), heard))
    return table(rows)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


#: Each command's function, by name.
COMMANDS = {"status": _status, "workers": _workers, "watch": _watch, "purge": _purge,
            "retry": _retry, "drain": _drain}
