"""The WorkerLink's credit per kind of slot, its registration (slots, tasks
and their kinds), and the jobs its executor gives back unstarted: reported
to the control plane (``Report.returned``), kept through an outage, and
asked for when the subworker drains, before it deregisters.

The control plane is ``FakeControlPlane`` (see ``test_link_outage``); the
Executor is a stand-in the tests drive. Every test runs under MockClock.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from fastworker.messages import (
    ASYNC,
    PROCESS,
    THREAD,
    Assign,
    Credit,
    Deregister,
    Job,
    Register,
    Report,
    Returned,
    Running,
)
from tests.fastworker.helpers import Recorder
from tests.fastworker.test_link_outage import FakeControlPlane, finished, open_link


def job(id: str, task: str = "add") -> Job:
    return Job(id=id, task=task, payload=b"p", priority=2, timeout=None)


class GivingBackExecutor(Recorder):
    """An executor stand-in that holds the jobs it is assigned and, asked
    to give back (``Assign.give_back``), sends its ``dispatcher`` (the link)
    those not in ``started`` in one ``Returned``."""

    refs_required = ("dispatcher",)

    def __init__(self, options: Any, context: Any, *, got: list[Any],
                 started: set[str]) -> None:
        super().__init__(options, context, got=got)
        self.started = started
        self.held: list[Job] = []

    async def handle(self, message: Any) -> Any:
        self.got.append(message)
        if isinstance(message, Assign):
            self.held.extend(message.jobs)
            if message.give_back:
                back = tuple(j for j in self.held if j.id not in self.started)
                self.held = [j for j in self.held if j.id in self.started]
                await self.refs["dispatcher"].send(Returned(jobs=back))


def assigned(got: list[Any]) -> list[str]:
    return [j.id for m in got if isinstance(m, Assign) for j in m.jobs]


class TestCreditPerKind:
    async def test_a_report_offers_the_executor_s_credit_summed_per_kind(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Credits of different kinds add up, each in its own place of
        ``Report.credit``; a job assigned takes credit of its task's kind
        only, and a slot freed comes back as that kind's."""
        tasks = {"add": THREAD, "sleep": ASYNC, "crunch": PROCESS}
        first = Credit(worker="w1", slots=(0, 2, 0), tasks=tasks)
        async with open_link(monkeypatch, first_credit=first) as h:
            cp = h.control_plane
            await h.until(lambda: bool(cp.reports))
            await h.send(Credit(worker="w1", slots=(3, 0, 0)),
                         Credit(worker="w1", slots=(1, 1, 4)))
            await h.until(lambda: len(cp.reports) == 2)
            cp.to_assign = (job("t1"), job("t2"), job("a1", "sleep"))
            await h.until(lambda: len(assigned(h.executor_got)) == 3)
            await h.send(Credit(worker="w1", slots=(1, 0, 0)), finished("a1"))
            await h.until(lambda: len(cp.reports) == 3)
        assert [r.credit for r in cp.reports] == [(0, 2, 0), (4, 1, 4), (1, 0, 0)]
        assert cp.delivered() == ["a1"]

    async def test_a_report_sent_again_carries_the_same_credit_and_none_is_offered_twice(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Report unanswered is sent again with the same number and the
        same credit; the credit it carries is not offered again in the next
        Report, which carries only what came since."""
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            await h.until(lambda: bool(cp.reports))
            cp.unanswered = {Report}
            await h.send(Credit(worker="w1", slots=(2, 0, 1)))
            await h.until(lambda: len(cp.ignored) == 2)
            cp.unanswered = set()
            await h.until(lambda: len(cp.reports) == 2)
            await h.send(Credit(worker="w1", slots=(0, 1, 0)))
            await h.until(lambda: len(cp.reports) == 3)
        first, again = cp.ignored
        assert (first.seq, first.credit) == (again.seq, again.credit) == (2, (2, 0, 1))
        assert [(r.seq, r.credit) for r in cp.reports] == [
            (1, (0, 2, 0)), (2, (2, 0, 1)), (3, (0, 1, 0))]


    async def test_the_first_offer_is_said_even_if_jobs_came_while_it_was_answered(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A registration's first offer of credit is logged once answered,
        even when jobs were assigned while it waited for its answer (the
        line an operator, and a test harness, reads as "this worker is in")."""
        caplog.set_level(logging.INFO, logger="fastworker.link")
        made = FakeControlPlane.__init__

        def slow_reports(self: FakeControlPlane) -> None:
            made(self)
            self.report_delay = 2.0  # the first Report is answered after...
            self.to_assign = (job("t1"),)  # ...the first Pull brings a job

        monkeypatch.setattr(FakeControlPlane, "__init__", slow_reports)
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            await h.until(lambda: len(assigned(h.executor_got)) == 1)
            await h.until(lambda: bool(cp.reports))
        assert [r.credit for r in cp.reports][:1] == [(0, 2, 0)]
        offered = [m for m in caplog.messages if "offered" in m]
        assert len(offered) == 1 and "2 thread" in offered[0], caplog.messages


class TestRegister:
    async def test_register_carries_the_first_credit_s_slots_and_each_task_s_kind(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """``Register.slots`` is the executor's first Credit (an executor
        that says no prefetch), ``tasks`` its tasks sorted and ``kinds`` the
        kind of each. Tasks the executor names later are logged, and told
        at the next registration; its slots stay those of the first."""
        caplog.set_level(logging.INFO, logger="fastworker.link")
        first = Credit(worker="w1", slots=(4, 8, 2),
                       tasks={"sleep": ASYNC, "add": THREAD, "crunch": PROCESS})
        async with open_link(monkeypatch, first_credit=first) as h:
            cp = h.control_plane
            await h.send(Credit(worker="w1", slots=(0, 0, 0),
                                tasks={"add": THREAD, "fresh": ASYNC}))
            cp.restart()
            await h.until(lambda: cp.registrations == 2)
        one, two = cp.registers
        assert (one.slots, one.tasks, one.kinds) == (
            (4, 8, 2), ("add", "crunch", "sleep"), (THREAD, PROCESS, ASYNC))
        assert (two.slots, two.tasks, two.kinds) == ((4, 8, 2), ("add", "fresh"), (THREAD, ASYNC))
        lines = [r.getMessage() for r in caplog.records if r.name == "fastworker.link"]
        assert ("link: the executor's tasks changed (2 now, 1 new, 2 gone); the control plane "
                "learns them when this worker registers next") in lines
        assert any(line.endswith("as w1 (4 async, 8 thread, 2 process slots, 3 tasks)")
                   for line in lines)


class TestPrefetch:
    async def test_the_executor_s_prefetch_is_registered_and_each_change_reported_once(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``Register.slots`` is the executor's slots (its first grant less
        its first prefetch), ``holds`` the most it holds and ``prefetch``
        its prefetch then; a change reaches the control plane in the next
        Report, even one with no credit, and only once; registering again
        tells the latest."""
        first = Credit(worker="w1", slots=(5, 9, 3), tasks={"add": THREAD},
                       prefetch=(1, 1, 1), holds=(68, 72, 66))
        async with open_link(monkeypatch, first_credit=first) as h:
            cp = h.control_plane
            await h.until(lambda: bool(cp.reports))
            await h.send(Credit(worker="w1", slots=(0, 0, 0), prefetch=(1, 30, 1)))
            await h.until(lambda: len(cp.reports) == 2)
            await h.send(Credit(worker="w1", slots=(0, 2, 0)))
            await h.until(lambda: len(cp.reports) == 3)
            cp.restart()
            await h.until(lambda: cp.registrations == 2)
        one, two = cp.registers
        assert (one.slots, one.holds, one.prefetch) == ((4, 8, 2), (68, 72, 66), (1, 1, 1))
        assert (two.slots, two.holds, two.prefetch) == ((4, 8, 2), (68, 72, 66), (1, 30, 1))
        assert [(r.credit, r.prefetch) for r in cp.reports[:3]] == [
            ((5, 9, 3), ()), ((0, 0, 0), (1, 30, 1)), ((0, 2, 0), ())]


class TestReturned:
    async def test_jobs_given_back_reach_the_control_plane_at_once_and_are_held_no_more(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The executor's ``Returned`` goes out at once as ``Report.returned``
        (ids, in order); registering again, the link no longer lists those
        jobs as held, and its snapshot counts them."""
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            cp.to_assign = (job("j1"), job("j2"), job("j3"))
            await h.until(lambda: len(assigned(h.executor_got)) == 3)
            sent_at = trio.current_time()
            await h.send(Returned(jobs=(job("j2"), job("j3"))))
            await h.until(lambda: any(r.returned for r in cp.reports))
            reported_at = trio.current_time()
            stats = await h.stats()
            cp.restart()
            await h.until(lambda: cp.registrations == 2)
        [report] = [r for r in cp.reports if r.returned]
        assert report.returned == ("j2", "j3") and reported_at == sent_at
        assert [held.id for held in cp.registers[1].holding] == ["j1"]
        assert stats.returned_total == 2

    async def test_jobs_given_back_during_an_outage_are_reported_after_registering(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ids given back while the control plane is down are kept (never
        dropped, whatever ``max_buffered_outcomes``) and sent, in every copy
        of the Report that carries them, once the link has registered
        again."""
        async with open_link(monkeypatch, max_buffered_outcomes=1) as h:
            cp = h.control_plane
            cp.to_assign = (job("j1"), job("j2"), job("j3"))
            await h.until(lambda: len(assigned(h.executor_got)) == 3)
            cp.up = False
            await h.send(Returned(jobs=(job("j1"),)))
            await h.send(Returned(jobs=(job("j2"), job("j3"))), finished("x1"), finished("x2"))
            cp.restart()
            await h.until(lambda: any(r.returned for r in cp.reports))
        returned = [i for r in cp.reports for i in r.returned]
        assert returned == ["j1", "j2", "j3"]
        assert cp.registers[1].holding == ()

    async def test_an_assign_that_asks_to_give_back_reaches_the_executor_as_it_came(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An operator drained this worker: the control plane answers a Pull
        with ``Assign(give_back=True)`` and no jobs; the executor gets it,
        and what it gives back goes to the control plane."""
        started: set[str] = {"j1"}
        async with open_link(monkeypatch, executor=GivingBackExecutor,
                             executor_params={"started": started}) as h:
            cp = h.control_plane
            cp.to_assign = (job("j1"), job("j2"))
            await h.until(lambda: len(assigned(h.executor_got)) == 2)
            cp.assign_next = Assign(jobs=(), give_back=True)
            await h.until(lambda: any(r.returned for r in cp.reports))
            given = [m.give_back for m in h.executor_got if isinstance(m, Assign)]
            await h.send(finished("j1"))
        assert given == [False, True]
        assert [i for r in cp.reports for i in r.returned] == ["j2"]


class TestDrain:
    async def test_draining_the_link_asks_the_executor_to_give_back_before_it_deregisters(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a graceful stop, once ``Drain`` is answered and the last Pull's
        jobs are with the executor, the link asks it to give back what has
        not started; those ids reach the control plane in a Report before
        ``Deregister``; the job that started runs to its end and its outcome
        goes out before ``Deregister`` too."""
        started: set[str] = set()
        async with trio.open_nursery() as nursery:
            async with open_link(monkeypatch, executor=GivingBackExecutor,
                                 executor_params={"started": started}) as h:
                cp = h.control_plane
                cp.to_assign = (job("j1"), job("j2"))
                await h.until(lambda: len(assigned(h.executor_got)) == 2)
                cp.assign_on_drain = (job("last"),)  # the parked Pull's answer
                started.add("j1")
                await h.send(Running(ids=("j1",), worker="w1", started_at=1.0, attempts=(1,)))

                async def end_j1_once_given_back() -> None:
                    await h.until(lambda: any(isinstance(m, Assign) and m.give_back
                                              for m in h.executor_got))
                    await h.send(finished("j1"))

                nursery.start_soon(end_j1_once_given_back)
            # Leaving the block stopped the node gracefully: the link drained.
        assigns = [m for m in h.executor_got if isinstance(m, Assign)]
        assert [([j.id for j in m.jobs], m.give_back) for m in assigns] == [
            (["j1", "j2"], False), (["last"], False), ([], True)]
        drain_answered = cp.events.index("answered Drain")
        asked = cp.events.index("Deregister")
        order = [m for m in cp.messages if isinstance(m, (Report, Deregister, Register))]
        [giving_back] = [m for m in order if isinstance(m, Report) and m.returned]
        assert giving_back.returned == ("j2", "last")
        assert order.index(giving_back) < order.index(order[-1]) and isinstance(
            order[-1], Deregister)
        assert cp.delivered() == ["j1"]
        assert drain_answered < asked
