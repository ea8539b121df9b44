"""What a client or a worker sends, checked by a real control plane: bad
values refused with the field and the limit named, and duplicate runs of a
task counted in its record.

Frames are made by hand (``RawRequests``: a ``Framer`` and a stamp over a
raw request wire), as a client that skips the client library's own checks,
or a subworker, would send them.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from actors.edge import offset_address
from actors.frame import Framer, secret_from
from actors.nng import open_request_wire
from actors.pytest_plugin import free_tcp_ports
from actors.testing import RawRequests
from examples import tasks
from fastworker import Client, InvalidSubmission
from fastworker.limits import MAX_ID_LENGTH, MAX_QUERY_IDS
from fastworker.messages import (
    CODEC,
    THREAD,
    WORKERS_PORT_OFFSET,
    Accepted,
    Ack,
    Assign,
    Cancel,
    CancelReply,
    Outcome,
    Pull,
    Records,
    Register,
    Registered,
    Rejected,
    Report,
    Running,
    StatusQuery,
    Stop,
    Submit,
    TaskRecord,
    UnknownWorker,
    Watch,
)
from fastworker.payload import pack_call
from tests.process.harness import control_plane, env  # noqa: F401 (fixture)

CONTROL = "config/control.toml"
SECRET = "validation-secret"
#: A task only the hand-made workers below can run (the control plane's
#: own executor does not know it, so each run of it is theirs).
REMOTE_TASK = "tests.remote_only"
#: Seconds between a worker's heartbeats: silent for three, it is lost
#: (the default; the hand-made workers need a few round trips of margin).
HEARTBEAT = 1.0


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811 (fixture)
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_TASKS"] = "examples.tasks"
    env["FASTWORKER_SECRET"] = SECRET
    env["FASTWORKER_HEARTBEAT"] = str(HEARTBEAT)
    return env


class Port:
    """A raw request wire to one port of the control plane, signing frames."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.framer = Framer(CODEC, secret=secret_from(SECRET))

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Port]:
        self.wire = await open_request_wire(self.address, recv_max_size=8 << 20)
        self.raw = RawRequests(self.framer, functools.partial(self.wire.request, timeout=10))
        try:
            yield self
        finally:
            await self.wire.aclose()

    async def ask(self, *messages: Any) -> list[Any]:
        _, answers = await self.raw.send(list(messages))
        return answers


def submit(**fields: Any) -> Submit:
    return Submit(**{"id": "t-1", "task": "examples.tasks.add",
                     "payload": pack_call((1, 2), {}), **fields})


async def test_bad_values_are_refused_by_the_control_plane(
    control_env: dict[str, str],
) -> None:
    """A Submit with a NaN or infinite time, or a 1,000,000-character id, and
    queries over their limits, are answered ``Rejected`` naming the field
    and the limit; a Cancel or Stop of an over-long id is answered
    ``unknown``; the same calls from the client raise before they are
    sent; good work goes on."""
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env), Port(address).open() as submissions, \
            Port(offset_address(address, 4)).open() as queries:
        refused = await submissions.ask(
            submit(id="nan", timeout=math.nan),
            submit(id="inf", queue_wait=math.inf),
            submit(id="x" * 1_000_000),
            submit(id="long-name", task="t" * 513),
            submit(id="good"),
        )
        asked = await queries.ask(
            StatusQuery(ids=("a",) * (MAX_QUERY_IDS + 1)),
            Watch(session="s", ids=("y" * (MAX_ID_LENGTH + 1),)),
            Watch(session="s", ids=("good",), wait=math.nan),
            StatusQuery(ids=("good",)),
        )
        long_id = "z" * (MAX_ID_LENGTH + 1)
        stopped = await queries.ask(Cancel(id=long_id)) + await queries.ask(Stop(id=long_id))
        async with Client(address, secret=SECRET) as client:
            with pytest.raises(InvalidSubmission) as raised:
                await client.send(tasks.add, (1, 2), timeout=math.nan)
            with pytest.raises(InvalidSubmission) as cancel_raised:
                await client.cancel(long_id)
            assert await client.result("good", timeout=10) == 3
    assert [r.message for r in refused[:4]] == [
        "timeout nan is not a number of seconds > 0",
        "queue_wait inf is not a number of seconds >= 0",
        "id is 1000000 characters; the limit is 256",
        "task name is 513 characters; the limit is 512",
    ]
    assert all(isinstance(r, Rejected) and r.error == "InvalidSubmission" for r in refused[:4])
    assert [r.id for r in refused[:4]] == ["nan", "inf", "x" * 1_000_000, "long-name"]
    assert refused[4] == Accepted(id="good")
    assert asked[:3] == [
        Rejected(id="", error="InvalidSubmission",
                 message=f"StatusQuery names {MAX_QUERY_IDS + 1} ids; the limit is "
                 f"{MAX_QUERY_IDS}"),
        Rejected(id="", error="InvalidSubmission",
                 message=f"Watch id is {MAX_ID_LENGTH + 1} characters; the limit is "
                 f"{MAX_ID_LENGTH}"),
        Rejected(id="", error="InvalidSubmission",
                 message="Watch wait nan is not a number of seconds >= 0"),
    ]
    assert isinstance(asked[3], Records) and asked[3].records[0].id == "good"
    assert str(raised.value) == "timeout nan is not a number of seconds > 0"
    # No task can have an id over the limit: a Cancel or Stop of one is
    # answered at once, and the client says why before sending it.
    assert stopped == [CancelReply(id=long_id, outcome="unknown")] * 2
    assert str(cancel_raised.value) == (
        f"task id is {MAX_ID_LENGTH + 1} characters; the limit is {MAX_ID_LENGTH}")


def register(worker: str, **fields: Any) -> Register:
    values: dict[str, Any] = {"host": "test", "pid": 1, "slots": (0, 1, 0),
                              "tasks": (REMOTE_TASK,), "kinds": (THREAD,), **fields}
    return Register(worker=worker, **values)


async def test_a_register_with_bad_kinds_or_slots_is_refused_with_the_reason(
    control_env: dict[str, str],
) -> None:
    """A subworker's Register naming more kinds than tasks, a kind that is
    none of ``KINDS``, or a negative slot count is answered UnknownWorker
    (it may ask again once fixed) and logged with what is wrong; a good one
    is welcomed after them."""
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env) as control, \
            Port(offset_address(address, WORKERS_PORT_OFFSET)).open() as workers:
        answers = [answer for bad in (register("long", kinds=(THREAD, THREAD)),
                                      register("seven", kinds=(7,)),
                                      register("negative", slots=(1, -2, 0)))
                   for answer in await workers.ask(bad)]
        lines = [await control.wait_for(f"refused worker '{name}'")
                 for name in ("long", "seven", "negative")]
        assert isinstance((await workers.ask(register("good")))[0], Registered)
    assert answers == [UnknownWorker(worker=name) for name in ("long", "seven", "negative")]
    assert [line.split(": ")[-1] for line in lines] == [
        "kinds names 2 kinds for 1 tasks; expected one per task, or none",
        "a task's kind is 7; expected 0 to 2 (KINDS)",
        "slots for thread is -2; expected 0 or more",
    ]


async def test_a_worker_thought_lost_that_finishes_too_is_a_counted_duplicate_run(
    control_env: dict[str, str],
) -> None:
    """Worker w1 starts a task and goes silent (frozen): it is declared lost
    and the task runs again on w2, whose result is kept. When w1 wakes up
    and reports its own result, the task's record counts one duplicate run;
    w1 sending that report again counts nothing more."""
    address = control_env["FASTWORKER_ADDRESS"]
    task_id = "dup-1"
    async with control_plane(control_env) as control, \
            Port(offset_address(address, WORKERS_PORT_OFFSET)).open() as workers, \
            Port(offset_address(address, 2)).open() as submissions, \
            Port(offset_address(address, 4)).open() as queries:
        [joined, offered] = await workers.ask(register("w1"), Report(worker="w1", credit=(0, 1, 0),
                                                                      seq=1))
        assert isinstance(joined, Registered) and offered == Ack()
        assert await submissions.ask(submit(id=task_id, task=REMOTE_TASK)) == [
            Accepted(id=task_id)]
        [first] = await workers.ask(Pull(worker="w1", wait=10, seq=1))
        assert isinstance(first, Assign) and [(j.id, j.attempt) for j in first.jobs] == [
            (task_id, 1)]
        started = Running(ids=(task_id,), worker="w1", started_at=time.time(), attempts=(1,))
        assert await workers.ask(Report(worker="w1", running=(started,), seq=2)) == [Ack()]
        # w1 is frozen from here: no heartbeat, no report.
        await control.wait_for("worker w1 lost")

        [joined, offered] = await workers.ask(register("w2"), Report(worker="w2", credit=(0, 1, 0),
                                                                      seq=1))
        assert isinstance(joined, Registered) and offered == Ack()
        [second] = await workers.ask(Pull(worker="w2", wait=10, seq=1))
        assert isinstance(second, Assign) and [(j.id, j.attempt) for j in second.jobs] == [
            (task_id, 2)]
        kept = Outcome(id=task_id, attempt=2, worker="w2", value=b"from w2",
                       started_at=time.time(), finished_at=time.time())
        assert await workers.ask(Report(worker="w2", finished=(kept,), seq=2)) == [Ack()]
        [before] = (await queries.ask(StatusQuery(ids=(task_id,))))[0].records

        # w1 wakes up, and reports what it ran (twice: its answer was lost).
        late = Outcome(id=task_id, attempt=1, worker="w1", value=b"from w1",
                       started_at=started.started_at, finished_at=time.time())
        woke = Report(worker="w1", finished=(late,), seq=3)
        assert await workers.ask(woke) == [UnknownWorker(worker="w1")]
        [after] = (await queries.ask(StatusQuery(ids=(task_id,))))[0].records
        assert await workers.ask(woke) == [UnknownWorker(worker="w1")]
        [again] = (await queries.ask(StatusQuery(ids=(task_id,))))[0].records
    assert (before.state, before.value, before.attempt, before.duplicate_runs) == (
        "succeeded", b"from w2", 2, 0)
    assert isinstance(after, TaskRecord)
    assert (after.value, after.worker, after.duplicate_runs) == (b"from w2", "w2", 1)
    assert again == after
