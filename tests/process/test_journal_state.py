"""What waits in time survives a SIGKILL of the control plane: a real
``fastworker run config/control.toml`` with the journal in a temporary
directory holds a countdown task, a task waiting for its retry and a
periodic schedule's last run; it is killed with SIGKILL, and a new one on
the same journal and ports runs each at its time, once, as if nothing had
happened (docs/durability.md, docs/tasks.md "Periodic tasks").

The tasks (tests/process/journal_state_tasks.py) append one line per run,
"<label> <wall-clock time>", to files the test reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from fastworker import Client
from fastworker.messages import TaskRecord
from tests.process.harness import GUARD, Running, env, fastworker_run  # noqa: F401 (fixture)
from tests.process.test_control import CONTROL, control_env  # noqa: F401 (fixture)

TASKS = "tests.process.journal_state_tasks"
# The test does not import the task module: its periodic task would join the
# registry of this process, where in-process schedulers look.
EVERY = 5.0  # journal_state_tasks.EVERY: the periodic task's beat
BACKOFF = 8.0  # journal_state_tasks.BACKOFF: the wait before flaky's retry
COUNTDOWN = 8.0
#: How long the control plane stays down after the kill: long enough that a
#: schedule restarted from the start ("every" after it) and one that keeps
#: its beat run seconds apart.
OUTAGE = 2.0
#: A run may start this much before its due time (float rounding between the
#: control plane's trio clock and the wall clock), and comes this late at most.
EARLY, LATE = 0.25, 2.0


def runs(path: Path) -> list[tuple[str, float]]:
    """The runs a task recorded in ``path``: (label, wall-clock time)."""
    if not path.exists():
        return []
    return [(label, float(at)) for label, at in
            (line.split() for line in path.read_text().splitlines())]


async def until(condition: Callable[[], object], what: str, limit: float) -> None:
    """A bounded poll, for what no client call or log line announces."""
    with trio.move_on_after(limit):
        while not condition():
            await trio.sleep(0.02)
        return
    pytest.fail(f"no {what} within {limit:g} s")


async def state_is(client: Client, task_id: str, state: str, limit: float) -> TaskRecord:
    record = await client.status(task_id)
    with trio.move_on_after(limit):
        while record.state != state:
            await trio.sleep(0.02)
            record = await client.status(task_id)
        return record
    pytest.fail(f"task {task_id} is still {record.state}, not {state}, after {limit:g} s")


async def test_countdown_retry_and_schedule_survive_a_kill_9(
    control_env: dict[str, str], tmp_path: Path,  # noqa: F811
    host_secret: bytes,  # the client opens before the control plane
) -> None:
    """After a SIGKILL and a restart on the same journal: the countdown task
    runs once, at its due time; the task waiting for its retry runs as
    attempt 2 after its backoff, succeeds, and keeps attempt 1's error; the
    periodic task keeps its beat from its last run (no run twice for one
    slot, none at the restart); the client that submitted before the kill
    gets both results."""
    beats, attempts, later = tmp_path / "beats", tmp_path / "attempts", tmp_path / "later"
    environ = {**control_env, "FASTWORKER_TASKS": TASKS,
               "FASTWORKER_JOURNAL": str(tmp_path / "fastworker.journal"),
               "JOURNAL_STATE_BEATS": str(beats)}
    address = environ["FASTWORKER_ADDRESS"]
    async with Client(address) as client:
        async with fastworker_run(CONTROL, environ) as first:
            await first.wait_for("node control ready")
            # The schedule's first run, EVERY after the start.
            await until(lambda: runs(beats), "run of the periodic task", EVERY + GUARD)
            [(_, first_beat)] = runs(beats)

            # A task that fails its first attempt: it waits BACKOFF for its retry.
            flaky = await client.send("tests.journal_state.flaky", (str(attempts), 1))
            waiting = await state_is(client, flaky, "scheduled", GUARD)
            # Submitted after the retry was held: its Accepted (which waits for
            # its commit) also means the journal has the moves made before it.
            sent_at = time.time()
            delayed = await client.send("tests.journal_state.later", ("countdown", str(later)),
                                        countdown=COUNTDOWN)
            held = await client.status(delayed)

            first.process.kill()
            assert await first.process.wait() == -9
        killed_at = time.time()
        await trio.sleep(OUTAGE)  # the outage itself, not a wait for some state

        async with fastworker_run(CONTROL, environ) as second:
            await second.wait_for("node control ready")
            restarted_at = time.time()
            async with trio.open_nursery() as nursery:
                results: dict[str, object] = {}

                async def result(task_id: str) -> None:
                    results[task_id] = await client.result(task_id, timeout=COUNTDOWN + GUARD)

                nursery.start_soon(result, flaky)
                nursery.start_soon(result, delayed)
            # The schedule's next two runs after the restart.
            await until(lambda: len(runs(beats)) >= 3, "two runs of the periodic task after the "
                        "restart", 2 * EVERY + GUARD)
            done_flaky, done_delayed = await client.status(flaky), await client.status(delayed)
            assert await second.stop() == 0, second.tail

    # What the kill left in the journal, as the new control plane said it.
    recovered = [line for line in second.lines if "inbox: recovered" in line]
    assert recovered and "0 queued, 2 scheduled, 0 dispatched" in recovered[0], second.output
    started = next(line for line in second.lines if "started scheduler" in line)
    assert "tests.journal_state.beat every 5 s, last " in started, started

    # The countdown task: held when the control plane died, run once at its time.
    assert held.state == "scheduled"
    assert sent_at + COUNTDOWN - 0.05 <= held.scheduled_for <= killed_at + COUNTDOWN
    due = held.scheduled_for
    assert due > restarted_at + 1, "the restart came too late for the test to mean anything"
    [(label, ran_at)] = runs(later)
    assert label == "countdown"
    assert due - EARLY <= ran_at <= due + LATE, (ran_at - due)
    assert results[delayed] == "countdown"
    assert done_delayed.state == "succeeded" and done_delayed.attempt == 1
    assert done_delayed.scheduled_for == pytest.approx(due, abs=0.05)

    # The retry: attempt 1 failed before the kill, attempt 2 ran BACKOFF later
    # on the new control plane, and the record keeps attempt 1's error.
    [(first_label, failed_at), (second_label, retried_at)] = runs(attempts)
    assert (first_label, second_label) == ("attempt1", "attempt2")
    assert waiting.attempt == 1
    retry_due = waiting.scheduled_for
    assert failed_at + BACKOFF - EARLY <= retry_due <= failed_at + BACKOFF + 1
    assert retry_due > restarted_at + 1, "the restart came too late for the test to mean anything"
    assert retry_due - EARLY <= retried_at <= retry_due + LATE, (retried_at - retry_due)
    assert results[flaky] == 2
    assert done_flaky.state == "succeeded"
    assert done_flaky.attempt == 2
    [before_kill] = waiting.attempts
    assert before_kill.attempt == 1
    assert before_kill.error.type == "ConnectionError"
    assert before_kill.error.message == "attempt 1 failed on purpose"
    assert done_flaky.attempts == waiting.attempts  # kept across the kill

    # The schedule: its run before the kill, then on its beat from that run
    # (not EVERY after the restart, nor at once), one run per slot.
    times = [at for _, at in runs(beats)]
    assert times[0] == first_beat and times[0] < killed_at
    after_restart = times[1]
    assert after_restart > restarted_at + 0.5, (after_restart - restarted_at)
    assert after_restart < restarted_at + EVERY - 0.5, (after_restart - restarted_at)
    assert abs((after_restart - first_beat) - EVERY) < 0.5, times
    assert all(abs((b - a) - EVERY) < 0.5 for a, b in zip(times, times[1:])), times
    assert len(times) == 3, times  # read after the stop: no run besides these
