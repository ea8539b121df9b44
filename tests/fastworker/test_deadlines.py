"""One clock per decision: a job's deadline reaches a subworker with the
control plane's clock reading at send (``Assign.sent_at``), and the
subworker counts the time left on its own clock (``fastworker.deadlines``).

The conversion is checked with fixed clocks. Then a real WorkerLink and
Executor (a subworker in process, under MockClock) take jobs from a
stand-in control plane whose wall clock is an hour off the test's
``time.time()``, as a subworker's clock would be off its control plane's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from trio.testing import MockClock

from actors import Topology, open_node
from fastworker.deadlines import on_arrival
from fastworker.executor import Executor
from fastworker.link import WorkerLink
from fastworker.link import session as link_module
from fastworker.messages import CODEC, Assign, Job, Outcome
from fastworker.payload import pack_call, unpack_value
from tests.fastworker import sample_tasks  # noqa: F401 (registers tests.sample.*)
from tests.fastworker.test_link_outage import FakeControlPlane

#: Virtual seconds a condition may take before the test fails instead of hanging.
PATIENCE = 3_600.0
HOUR = 3_600.0
#: The sender's clock in the conversion tests.
SENT_AT = 1_000_000.0


def job(id: str, expires_at: float | None = None) -> Job:
    return Job(id=id, task="tests.sample.async_add", payload=pack_call((1, 2), {}), priority=2,
               timeout=None, expires_at=expires_at)


class TestOnArrival:
    @pytest.mark.parametrize("receiver", [HOUR, -HOUR, 0.0],
                             ids=["an_hour_ahead", "an_hour_behind", "the_same"])
    def test_a_deadline_keeps_its_time_left_whatever_the_receivers_clock(
        self, receiver: float
    ) -> None:
        """A job with 60 s left when the control plane answered has 60 s
        from its arrival on the subworker's clock, an hour ahead or behind."""
        wall = SENT_AT + receiver + 0.25
        assign = Assign(jobs=(job("j", SENT_AT + 60.0),), sent_at=SENT_AT)
        [arrived] = on_arrival(assign, wall).jobs
        assert arrived.expires_at == wall + 60.0
        assert attrs.evolve(arrived, expires_at=None) == job("j")

    def test_a_deadline_passed_at_the_sender_is_passed_on_arrival(self) -> None:
        """A deadline 2 s gone when the answer was made is 2 s gone on arrival."""
        wall = SENT_AT - HOUR
        assign = Assign(jobs=(job("j", SENT_AT - 2.0),), sent_at=SENT_AT)
        [arrived] = on_arrival(assign, wall).jobs
        assert arrived.expires_at == wall - 2.0

    def test_only_jobs_with_a_deadline_are_copied(self) -> None:
        """Jobs without a deadline, ``cancel`` and ``give_back`` pass as they
        are; the result is on this process's clock (no stamp)."""
        plain = job("plain")
        assign = Assign(jobs=(plain, job("d", SENT_AT + 5.0)), cancel=("c",), sent_at=SENT_AT,
                        give_back=True)
        arrived = on_arrival(assign, SENT_AT + HOUR)
        assert arrived.jobs[0] is plain
        assert arrived.jobs[1].expires_at == SENT_AT + HOUR + 5.0
        assert (arrived.cancel, arrived.sent_at, arrived.give_back) == (("c",), 0.0, True)

    @pytest.mark.parametrize("assign", [
        Assign(jobs=(job("plain"),), sent_at=SENT_AT),
        Assign(jobs=(job("d", SENT_AT + 5.0),)),
    ], ids=["no_deadline", "no_stamp"])
    def test_an_assign_with_nothing_to_move_is_passed_as_it_is(self, assign: Assign) -> None:
        """No deadline, or no stamp (already on this clock): nothing is copied."""
        assert on_arrival(assign, SENT_AT + HOUR) is assign

    def test_the_stamp_crosses_the_wire(self) -> None:
        """``sent_at`` is not part of equality, so it is checked by itself."""
        [decoded] = CODEC.decode(CODEC.encode([Assign(jobs=(job("j", 7.5),), sent_at=2.5)]))
        assert isinstance(decoded, Assign)
        assert (decoded.sent_at, decoded.jobs[0].expires_at) == (2.5, 7.5)


class SkewedControlPlane(FakeControlPlane):
    """A stand-in control plane whose wall clock reads ``skew`` seconds off
    this process's; it stamps its Assigns with it."""

    def __init__(self, skew: float) -> None:
        super().__init__()
        self.skew = skew

    def clock(self) -> float:
        return time.time() + self.skew

    async def _answer(self, message: Any) -> Any:
        answer = await super()._answer(message)
        if isinstance(answer, Assign) and answer.jobs:
            answer = attrs.evolve(answer, sent_at=self.clock())
        return answer


@asynccontextmanager
async def subworker(monkeypatch: pytest.MonkeyPatch, control_plane: FakeControlPlane
                    ) -> AsyncIterator[None]:
    """A WorkerLink and a real Executor, as config/sub.toml wires them,
    talking to ``control_plane``."""

    async def open_fake_wire(address: str, **_: Any) -> FakeControlPlane:
        return control_plane

    monkeypatch.setattr(link_module, "open_request_wire", open_fake_wire)
    topology = (
        Topology()
        .add("link", WorkerLink, refs={"executor": "executor"}, address="tcp://127.0.0.1:1",
             discovery_port=0, worker="w1")
        .add("executor", Executor, refs={"dispatcher": "link", "results": "link"},
             concurrency=4, worker="w1")
    )
    async with open_node(topology):
        yield


async def until(condition: Callable[[], bool]) -> None:
    """Let virtual time pass until ``condition`` holds."""
    with trio.fail_after(PATIENCE):
        while not condition():
            await trio.sleep(0.25)


class TestSubworkerClock:
    @pytest.mark.parametrize("skew", [-HOUR, HOUR],
                             ids=["worker_an_hour_ahead", "worker_an_hour_behind"])
    async def test_a_subworker_decides_deadlines_on_its_own_clock(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, skew: float
    ) -> None:
        """With its clock an hour ahead of the control plane's (or behind),
        a subworker runs a job with 60 s left, and expires one whose
        deadline had passed 1 s before the control plane handed it out."""
        control_plane = SkewedControlPlane(skew)
        now = control_plane.clock()
        control_plane.to_assign = (job("in_time", now + 60.0), job("late", now - 1.0))
        async with subworker(monkeypatch, control_plane):
            await until(lambda: sorted(control_plane.delivered()) == ["in_time", "late"])
        outcomes: dict[str, Outcome] = {
            o.id: o for report in control_plane.reports for o in report.finished}
        in_time, late = outcomes["in_time"], outcomes["late"]
        assert in_time.error is None and in_time.value is not None
        assert unpack_value(in_time.value) == 3
        assert late.error is not None
        assert (late.error.type, late.error.kind) == ("TaskExpired", "expired")
        passed = float(late.error.message.split("passed ")[1].split(" s ")[0])
        assert 1.0 <= passed < 2.0, late.error.message
