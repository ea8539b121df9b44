"""The journal with a fleet (issue 14): a real control plane and a real
subworker, the control plane killed with SIGKILL at random moments while
both run tasks and hundreds wait in its queue, and started again on the same
journal and ports; the subworker stays up and registers again by itself.

A crash-loop checker then counts per task what was lost, run twice, or run
without being accepted. The tasks (``tests.process.fleet_tasks``) tell a
tally in this test when they start and end, and in which process, so the
test kills at a moment it knows both workers are busy, and afterwards knows
which runs each kill caught."""

from __future__ import annotations

import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import trio

from fastworker import Client
from fastworker.client.outcome import Completed
from fastworker.messages import TaskRecord
from tests.process.harness import Running, env  # noqa: F401 (fixture)
from tests.process.test_subworkers import (  # noqa: F401 (fixture)
    Fleet,
    Gate,
    control_env,
    registered,
)

TASKS = "examples.tasks,tests.process.fleet_tasks"
SLOTS = 8  # the control plane's executor and the subworker's, each
KILLS = 3
PER_ROUND = 250  # tasks submitted before each kill
WAIT = 45  # seconds the waiting client may take, after the last restart, to have them all
#: A run that ended this shortly before a kill of the control plane may run
#: again: its result may not be in the journal yet (the result is acknowledged
#: to the subworker, and published, before its group commit).
UNWRITTEN = 1.0
#: Why a task may run again (at-least-once): a kill caught it running on the
#: control plane, or it had ended there with its result not yet in the
#: journal, or it was handed to the subworker just before a kill: the job
#: leaves before its "dispatched" is committed (only at-most-once jobs wait
#: for that), so it comes back queued and may run again. A task the subworker
#: held across a kill for longer is adopted, and one it finished is kept
#: (its Report is acked once written): neither runs again.
JUSTIFIED = {
    "cut short on the control plane",
    "ended on the control plane, result not yet written",
    "handed to the subworker just before a kill",
}
_RECOVERED = re.compile(r"inbox: recovered (\d+) queued")


@dataclass
class Run:
    """One run of a task, as its tally lines told it."""

    label: str
    pid: int
    started: float  # wall-clock time
    ended: float | None = None  # None: cut short (its process was killed)


@dataclass
class Kill:
    """One SIGKILL of the control plane, and what the next one recovered."""

    pid: int
    at: float  # wall-clock time, taken just before the signal
    queued: int  # tasks the next one brought back queued
    recovered: str  # the whole "recovered ..." of its start-up log
    #: When the test saw the subworker registered with the next control plane:
    #: it starts no job that plane gave it before this.
    registered: float = float("inf")


class Tally(Gate):
    """Where ``tests.fleet.run`` tasks say they started and ended: a Gate on
    a Unix socket, with another conversation (two lines per connection)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = str(path)
        self.runs: list[Run] = []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(self.path)
        sock.listen()
        task_status.started()
        await trio.serve_listeners(self._handle, [trio.SocketListener(sock)])

    async def _handle(self, stream: trio.SocketStream) -> None:
        pending = b""
        run: Run | None = None
        try:
            async for chunk in stream:
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    what, label, pid, when = line.decode().split()
                    if what == "start":
                        run = Run(label, int(pid), float(when))
                        self.runs.append(run)
                    else:
                        assert run is not None and run.label == label, line
                        run.ended = float(when)
                    self._changed.set()
        except trio.BrokenResourceError:
            pass  # its process was killed

    def running(self, pid: int, since: float) -> int:
        """How many runs in ``pid`` that started after ``since`` have not ended."""
        return sum(1 for run in self.runs
                   if run.pid == pid and run.ended is None and run.started >= since)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(20):
            while not condition():
                self._changed = trio.Event()
                await self._changed.wait()


async def watch(client: Client, ids: list[str], completed: dict[str, Completed]) -> None:
    """Wait for ``ids`` with ``client``, across restarts, keeping what comes."""
    async for done in client.as_completed(ids):
        completed[done.id] = done


async def sub_registered(control: Running) -> None:
    """Wait until the subworker has registered with ``control`` (it may have
    before ``control`` said it was ready)."""
    if not any("registered from" in line for line in control.lines):
        await registered(control)


def recovered(control: Running, killed: int, at: float) -> Kill:
    """The kill of ``killed``, with what the control plane started after it
    said it brought back from the journal."""
    [line] = [line for line in control.lines if "inbox: recovered" in line]
    found = _RECOVERED.search(line)
    assert found, line
    return Kill(killed, at, queued=int(found[1]),
                recovered="recovered " + line.split(": recovered ", 1)[1])


@dataclass
class Verdict:
    """A crash-loop checker's findings, per task (by its label)."""

    lost: list[str]  # accepted, and no run of it ended
    unexpected: list[str]  # ran, and never accepted
    twice: list[str]  # started more than once
    unjustified: list[str]  # ran again, though no kill explains it
    failed: list[str]  # the waiting client got an error, or nothing
    again_after: list[int]  # per kill: tasks run again because of it
    caught: list[tuple[int, int]]  # per kill: runs it caught on the control plane, the subworker
    why: Counter[str]  # why each earlier run of a task run again was not its last
    unwritten: float  # the longest a run that ran again had ended before its kill

    @property
    def summary(self) -> str:
        return (f"lost {len(self.lost)}, unexpected {len(self.unexpected)}, twice "
                f"{len(self.twice)} ({dict(self.why)}; unjustified {len(self.unjustified)}), "
                f"failed or missing {len(self.failed)}; run again after each kill "
                f"{self.again_after}; runs each caught (control plane, "
                f"subworker) {self.caught}; a run that ran again ended at most "
                f"{self.unwritten:.3f} s before its kill")


def check(accepted: dict[str, str], completed: dict[str, Completed], runs: list[Run],
          kills: list[Kill], final: dict[str, TaskRecord]) -> Verdict:
    """Count, per task, as a crash-loop checker would."""
    killed_at = {kill.pid: kill.at for kill in kills}

    def end(run: Run) -> float:
        """When the run ended, or was cut short by the kill of its process."""
        return run.ended if run.ended is not None else killed_at.get(run.pid, float("inf"))

    def why(run: Run) -> str:
        """Why a run may have been followed by another one of its task."""
        if run.pid in killed_at:
            at = killed_at[run.pid]
            if run.ended is None:
                return "cut short on the control plane"
            if run.ended >= at - UNWRITTEN:
                return "ended on the control plane, result not yet written"
            return "ended on the control plane long before its kill"
        if any(kill.at - UNWRITTEN <= run.started < kill.registered and kill.at < end(run)
               for kill in kills):
            # Started just before the kill, or during the outage from its
            # queue: handed out just before the kill.
            return "handed to the subworker just before a kill"
        if any(run.started < kill.registered and kill.at < end(run) for kill in kills):
            return "held by the subworker across a kill"
        if any(kill.at - UNWRITTEN <= run.ended < kill.at for kill in kills
               if run.ended is not None):
            return "ended on the subworker, result not yet written"
        return "ended on the subworker, no kill near"

    by_label: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda run: run.started):
        by_label.setdefault(run.label, []).append(run)
    labels = set(accepted.values())
    ids = {label: task_id for task_id, label in accepted.items()}
    twice = sorted(label for label, its in by_label.items() if len(its) > 1)
    reasons = Counter(why(run) for label in twice for run in by_label[label][:-1])

    def kill_of(run: Run) -> Kill:
        """The kill that made ``run`` not the last of its task."""
        if run.pid in killed_at:
            return next(kill for kill in kills if kill.pid == run.pid)
        return min((kill for kill in kills if kill.at >= end(run) - UNWRITTEN),
                   key=lambda kill: kill.at, default=kills[-1])

    earlier = [run for label in twice for run in by_label[label][:-1]]
    again = Counter(kill_of(run).pid for run in earlier)
    return Verdict(
        lost=sorted(label for label in labels
                    if not any(run.ended is not None for run in by_label.get(label, []))),
        unexpected=sorted(set(by_label) - labels),
        twice=twice,
        unjustified=[describe(label, by_label[label], kills, completed.get(ids[label]),
                              final.get(label)) for label in twice
                     if not all(why(run) in JUSTIFIED for run in by_label[label][:-1])],
        failed=sorted(label for task_id, label in accepted.items()
                      if task_id not in completed or not completed[task_id].ok
                      or completed[task_id].value != label),
        again_after=[again[kill.pid] for kill in kills],
        caught=[(sum(1 for run in runs if run.pid == kill.pid and run.ended is None),
                 sum(1 for run in runs if run.pid not in killed_at
                     and run.started < kill.at and run.ended is not None and run.ended > kill.at))
                for kill in kills],
        why=reasons,
        unwritten=max([kill_of(run).at - end(run) for run in earlier], default=0.0),
    )


def describe(label: str, runs: list[Run], kills: list[Kill], seen: Completed | None,
             final: TaskRecord | None) -> str:
    """A task's runs, in seconds from the kill nearest each, and its records:
    the one the waiting client got, and the one served at the end."""
    parts = []
    for run in runs:
        kill = min(kills, key=lambda kill: abs(kill.at - run.started))
        ended = "cut" if run.ended is None else f"{run.ended - kill.at:+.3f}"
        parts.append(f"pid {run.pid} {run.started - kill.at:+.3f}..{ended} "
                     f"(kill of {kill.pid})")
    records = [f"{what}: {record.state} attempt {record.attempt} by {record.worker}"
               for what, record in [("waiter got", seen and seen.record), ("at the end", final)]
               if record is not None]
    return f"{label}: " + "; ".join(parts + records)


async def test_kill_9_of_the_control_plane_in_a_fleet_loses_no_task(
    control_env: dict[str, str], tmp_path: Path,  # noqa: F811
) -> None:
    """Three SIGKILLs of a control plane, each while its own executor and a
    subworker are both running tasks and hundreds more are queued: every
    accepted task ends, a client waiting across the restarts gets every
    result, a new client gets them all from a restarted control plane, no
    task runs that was not accepted, and a task runs again only if a kill
    caught it running, or ended before its result was written."""
    journal = tmp_path / "fastworker.journal"
    environ = {**control_env, "FASTWORKER_TASKS": TASKS, "FASTWORKER_JOURNAL": str(journal),
               "FASTWORKER_CONCURRENCY": str(SLOTS), "FASTWORKER_LOCAL": "always"}
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    accepted: dict[str, str] = {}  # task id -> label
    completed: dict[str, Completed] = {}
    kills: list[Kill] = []
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        tally = Tally(tmp_path / "tally.sock")
        await nursery.start(tally.serve)
        fleet = Fleet(stack, environ, tally)
        control = await fleet.start_control()
        sub = await fleet.start_sub(concurrency=SLOTS)
        await sub_registered(control)
        since = time.time()
        async with Client(fleet.address) as waiting, trio.open_nursery() as waiters:
            for round_ in range(KILLS):
                calls = [(f"r{round_}-{n}", tally.path, rng.uniform(0.02, 0.1))
                         for n in range(PER_ROUND)]
                ids = await waiting.delay_many("tests.fleet.run", calls)
                accepted.update((task_id, call[0]) for task_id, call in zip(ids, calls))
                waiters.start_soon(watch, waiting, ids, completed)
                # Kill once a few more runs started, at a moment when this
                # control plane and the subworker are both running some (two:
                # one may have ended already, its "end" not yet read).
                starts = len(tally.runs) + rng.randrange(5, 60)
                await tally.wait_until(lambda: len(tally.runs) >= starts
                                       and tally.running(control.process.pid, since) > 1
                                       and tally.running(sub.process.pid, since) > 1)
                at = time.time()
                assert await control.stop(signal.SIGKILL) == -signal.SIGKILL
                killed = control.process.pid
                control = await fleet.start_control()
                kills.append(recovered(control, killed, at))
                await sub_registered(control)
                since = kills[-1].registered = time.time()
            # The client waiting since before the first kill gets every result.
            waiters.cancel_scope.deadline = trio.current_time() + WAIT
        # One more restart, idle: every result now comes from the journal.
        assert await control.stop(signal.SIGKILL) == -signal.SIGKILL
        control = await fleet.start_control()
        served: list[str] = []
        async with Client(fleet.address) as client:
            with trio.move_on_after(20):
                served = await client.results(list(accepted))
            # The records of tasks run more than once, to explain them.
            ran = Counter(run.label for run in tally.runs)
            final = {label: await client.status(task_id) for task_id, label in accepted.items()
                     if ran[label] > 1}
        assert await sub.stop() == 0, sub.tail
        assert "dropped" not in sub.output  # no outcome it held was given up
        assert await control.stop() == 0, control.tail
        nursery.cancel_scope.cancel()
    verdict = check(accepted, completed, tally.runs, kills, final)
    print(f"seed {seed}: {len(accepted)} accepted, {len(tally.runs)} runs "
          f"{dict(Counter(run.pid for run in tally.runs))}; {verdict.summary}")
    for kill in kills:
        print(f"  killed {kill.pid}; then {kill.recovered}")
    # Each kill caught both workers running, with hundreds queued.
    assert all(here > 0 and there > 0 for here, there in verdict.caught), verdict.caught
    assert all(kill.queued >= 100 for kill in kills), [kill.recovered for kill in kills]
    assert (verdict.lost, verdict.unexpected) == ([], []), verdict.summary
    assert verdict.failed == [], verdict.failed[:10]
    assert verdict.unjustified == [], verdict.unjustified[:10]
    assert served == list(accepted.values())
    done = await trio.run_process(
        [sys.executable, "-m", "fastworker", "journal", "check", str(journal)],
        capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
