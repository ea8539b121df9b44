"""The WorkerLink across a control-plane outage and restart (issue 14): what
the Executor reports while the control plane cannot take it is kept, in
order and bounded (the oldest dropped and counted), and delivered once the
link has registered again; a Report whose answer was lost goes again.

The control plane is a stand-in at the other end of the link's request
wire (``FakeControlPlane``, put in place of ``open_request_wire``): it
answers as the Registry and the Dispatcher do, can be down (requests time
out), can restart (it forgets every worker), can lose an answer, leave one
kind of request unanswered, and refuse registrations (as a full registry
does). The
Executor is a Recorder; the tests send the link what an Executor would.
Every test runs under MockClock (``autojump_clock``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import GetStats, Topology, open_node
from actors.frame import DEFAULT_MAX_FRAME_BYTES, Framer
from fastworker.link import REPORT_MAX_ITEMS, WorkerLink
from fastworker.link import session as link_module
from fastworker.messages import (
    CODEC,
    THREAD,
    Ack,
    Assign,
    Credit,
    Deregister,
    Drain,
    Finished,
    Heartbeat,
    HeldJob,
    Job,
    Outcome,
    Pull,
    Register,
    Registered,
    Report,
    Running,
    UnknownWorker,
)
from fastworker.stats import LinkStats
from tests.fastworker.helpers import Recorder

#: Virtual seconds a condition may take before the test fails instead of hanging.
PATIENCE = 3_600.0


class FakeControlPlane:
    """The link's request wire, answered as a control plane would: Register,
    Heartbeat, Pull (parked for its wait), Report, Drain, Deregister.

    A Report's outcomes are taken even from a worker it does not know (the
    Dispatcher passes them on, and answers ``UnknownWorker``)."""

    name = "dialing the fake control plane"

    def __init__(self) -> None:
        self.framer = Framer(CODEC, secret=None)
        self.up = True
        self.known: set[str] = set()
        self.registrations = 0
        self.registers: list[Register] = []
        self.reports: list[Report] = []
        #: Jobs the next parked Pull is answered with (once).
        self.to_assign: tuple[Job, ...] = ()
        self.lose_next_report_answer = False
        #: Kinds of request neither taken nor answered (they time out).
        self.unanswered: set[type] = set()
        self.ignored: list[Any] = []
        #: Registers refused (``UnknownWorker``) before one is accepted.
        self.refuse_registers = 0
        #: When each Register arrived (trio's clock).
        self.register_times: list[float] = []
        #: Seconds a Report waits before it is taken and answered.
        self.report_delay = 0.0
        #: What came and what was answered, in order: "Report", "answered Report", ...
        self.events: list[str] = []
        #: Jobs a parked Pull is answered with once a Drain comes (what the
        #: Dispatcher had placed for the worker).
        self.assign_on_drain: tuple[Job, ...] = ()
        self._drained = trio.Event()
        #: Every Pull that came, in order.
        self.pulls: list[Pull] = []
        #: Kinds of request answered with a frame that is not one (the next
        #: ``garble`` of them), and when.
        self.garbled: set[type] = set()
        self.garble = 0
        self.garbled_at: list[float] = []
        #: Every message that came, in order.
        self.messages: list[Any] = []
        #: An Assign the next parked Pull is answered with (once), as it is.
        self.assign_next: Assign | None = None

    def restart(self) -> None:
        """A new control plane on the same address: it knows no worker."""
        self.known.clear()
        self.up = True

    def delivered(self) -> list[str]:
        """The ids of the outcomes it took, in order."""
        return [o.id for report in self.reports for o in report.finished]

    async def request(self, frame: bytes, *, timeout: float | None = None) -> bytes:
        [message] = self.framer.unpack(frame)
        self.messages.append(message)
        self.events.append(type(message).__name__)
        if isinstance(message, Pull):
            self.pulls.append(message)
        if type(message) in self.garbled and self.garble:
            self.garble -= 1
            self.garbled_at.append(trio.current_time())
            await trio.lowlevel.checkpoint()
            return b"not a frame"
        if type(message) in self.unanswered:
            self.ignored.append(message)
            await trio.sleep(PATIENCE if timeout is None else timeout)
            raise TimeoutError
        answer = await self._answer(message) if self.up else None
        if answer is None or not self.up:
            await trio.sleep(PATIENCE if timeout is None else timeout)
            raise TimeoutError
        self.events.append(f"answered {type(message).__name__}")
        return self.framer.pack([answer])

    async def _answer(self, message: Any) -> Any:
        known = getattr(message, "worker", "") in self.known
        match message:
            case Register(worker=worker) if self.refuse_registers:
                self.refuse_registers -= 1
                self.register_times.append(trio.current_time())
                return UnknownWorker(worker=worker)
            case Register(worker=worker):
                self.register_times.append(trio.current_time())
                self.known.add(worker)
                self.registrations += 1
                self.registers.append(message)
                return Registered(worker=worker, heartbeat_interval=1.0, missed_limit=3)
            case Report():
                await trio.sleep(self.report_delay)
                self.reports.append(message)
                if self.lose_next_report_answer:  # taken, then the control plane dies
                    self.lose_next_report_answer = False
                    self.up = False
                    return None
            case Pull() if known and self.assign_next is not None:
                assign, self.assign_next = self.assign_next, None
                return assign
            case Pull() if known and self.to_assign:
                jobs, self.to_assign = self.to_assign, ()
                return Assign(jobs=jobs)
            case Pull(wait=wait) if known:
                with trio.move_on_after(wait):
                    await self._drained.wait()  # a Drain answers the parked Pull
                if message.worker in self.known:
                    jobs = self.assign_on_drain if self._drained.is_set() else ()
                    self.assign_on_drain = ()
                    return Assign(jobs=jobs)
            case Drain():
                self._drained.set()
            case Heartbeat() | Deregister():
                pass
        return Ack() if message.worker in self.known else UnknownWorker(worker=message.worker)

    async def aclose(self) -> None:
        pass


@attrs.define
class Harness:
    link: Any
    control_plane: FakeControlPlane
    executor_got: list[Any] = attrs.Factory(list)

    async def send(self, *messages: Any) -> None:
        """What the Executor would send the link, as one batch."""
        await self.link.send_batch(messages)
        await trio.testing.wait_all_tasks_blocked()

    async def stats(self) -> LinkStats:
        detail: LinkStats = (await self.link.call(GetStats())).detail
        return detail

    async def until(self, condition: Callable[[], bool]) -> None:
        """Let virtual time pass until ``condition`` holds."""
        with trio.fail_after(PATIENCE):
            while not condition():
                await trio.sleep(0.25)


class GatedExecutor(Recorder):
    """An executor stand-in that, once it has an Assign, takes nothing more
    until ``gate`` is set (with a mailbox of one, the link's hand-over after
    the next waits)."""

    def __init__(self, options: Any, context: Any, *, got: list[Any], gate: trio.Event) -> None:
        super().__init__(options, context, got=got)
        self.gate = gate

    async def handle(self, message: Any) -> Any:
        self.got.append(message)
        if isinstance(message, Assign):
            await self.gate.wait()


#: The first Credit the executor stand-in sends the link, unless a test says.
FIRST_CREDIT = Credit(worker="w1", slots=(0, 2, 0), tasks={"add": THREAD})


@asynccontextmanager
async def open_link(monkeypatch: pytest.MonkeyPatch, *, gate: trio.Event | None = None,
                    executor: type[Recorder] = Recorder,
                    executor_params: dict[str, Any] | None = None,
                    first_credit: Credit = FIRST_CREDIT,
                    **options: Any) -> AsyncIterator[Harness]:
    """``gate``: the executor blocks on its first Assign until it is set;
    ``executor``: another stand-in for it (given ``got``, and
    ``executor_params``, its ``dispatcher`` the link)."""
    control_plane = FakeControlPlane()
    executor_got: list[Any] = []

    async def open_fake_wire(address: str, **_: Any) -> FakeControlPlane:
        return control_plane

    monkeypatch.setattr(link_module, "open_request_wire", open_fake_wire)
    # Written first, as in config/sub.toml: an executor that sends to the
    # link makes a cycle, broken at the link, which then starts after the
    # executor and stops before it (its drain hears from the executor).
    topology = Topology().add("link", WorkerLink, refs={"executor": "executor"},
                              address="tcp://127.0.0.1:1", discovery_port=0, worker="w1",
                              **options)
    if gate is not None:
        topology.add("executor", GatedExecutor, params={"got": executor_got, "gate": gate},
                     mailbox=1)
    elif executor is not Recorder:
        topology.add("executor", executor, refs={"dispatcher": "link"},
                     params={"got": executor_got, **(executor_params or {})})
    else:
        topology.add("executor", Recorder, params={"got": executor_got})
    async with open_node(topology) as node:
        harness = Harness(node.refs["link"], control_plane, executor_got)
        await harness.send(first_credit)
        await harness.until(lambda: control_plane.registrations == 1)
        yield harness


def outcome(id: str, value: bytes = b"v") -> Outcome:
    return Outcome(id=id, attempt=1, worker="w1", value=value, started_at=1.0, finished_at=2.0)


def finished(*ids: str) -> Finished:
    return Finished(outcomes=tuple(outcome(id) for id in ids))


class TestOutage:
    async def test_outcomes_kept_through_a_restart_are_delivered_in_order_after_registering(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Outcomes reported while the control plane is down wait, the newest
        ``max_buffered_outcomes`` of them (the oldest dropped and counted);
        after the restart the link registers again and delivers them, in
        order, besides the Report in flight; what was acked is not resent."""
        async with open_link(monkeypatch, max_buffered_outcomes=3) as h:
            cp = h.control_plane
            await h.send(finished("o0"))
            await h.until(lambda: cp.delivered() == ["o0"])
            cp.up = False
            await h.send(finished("o1"))  # goes out at once, unanswered
            for id in ("o2", "o3", "o4", "o5", "o6"):
                await h.send(finished(id))
            await h.send(*[Running(ids=(f"r{n}",), worker="w1", started_at=1.0)
                           for n in range(5)])
            during = await h.stats()
            cp.restart()
            await h.until(lambda: cp.delivered()[-1:] == ["o6"])
            after = await h.stats()
        assert cp.delivered() == ["o0", "o1", "o4", "o5", "o6"]
        assert cp.registrations == 2
        running = [r.ids[0] for report in cp.reports for r in report.running]
        assert running == ["r2", "r3", "r4"]
        assert (during.buffered_outcomes, during.outcomes_dropped_total,
                during.running_dropped_total) == (3, 2, 2)
        assert (after.buffered_outcomes, after.outcomes_dropped_total,
                after.registrations_total, after.registered) == (0, 2, 2, True)

    async def test_a_request_answered_with_bad_frames_is_asked_again_after_a_pause(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A control plane that answers a Pull with something that is not a
        frame (or refuses it as stale again and again) gets the same Pull
        again a second later each time, not in a tight loop."""
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            cp.garbled.add(Pull)
            cp.garble = 5
            await h.until(lambda: len(cp.garbled_at) == 5)
            stats = await h.stats()
        gaps = [b - a for a, b in zip(cp.garbled_at, cp.garbled_at[1:], strict=False)]
        assert gaps and min(gaps) >= link_module._BAD_ANSWER_PAUSE
        assert stats.registered

    async def test_registering_again_the_link_says_which_jobs_it_holds(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After a restart the link registers again listing the jobs it was
        assigned and that have not ended (with their attempt, and start if
        they started), so that the new control plane can let them end here."""
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            cp.to_assign = tuple(Job(id=id, task="add", payload=b"p", priority=2, timeout=None,
                                     attempt=attempt) for id, attempt in
                                 (("j1", 2), ("j2", 1), ("j3", 1)))
            executor_got = h.executor_got
            await h.until(lambda: any(isinstance(m, Assign) and m.jobs for m in executor_got))
            await h.send(Running(ids=("j1", "j2"), worker="w1", started_at=7.0,
                                 attempts=(2, 1)), finished("j2"))
            cp.restart()
            await h.until(lambda: cp.registrations == 2)
        assert cp.registers[0].holding == ()
        assert cp.registers[1].holding == (HeldJob(id="j1", attempt=2, started_at=7.0),
                                           HeldJob(id="j3", attempt=1))

    async def test_pulls_count_up_across_registrations_and_reports_acknowledge_assigns(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Pull numbers never start again: registering again, the link says
        the last Pull and Report numbers it used (older copies still on the
        way are stale to the new control plane), and its next Pull goes on
        from there. A Report names the last Pull whose answer came."""
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            cp.to_assign = (Job(id="j1", task="add", payload=b"p", priority=2, timeout=None),)
            await h.until(lambda: any(isinstance(m, Assign) and m.jobs for m in h.executor_got))
            await h.send(Running(ids=("j1",), worker="w1", started_at=7.0, attempts=(1,)))
            await h.until(lambda: any(r.running for r in cp.reports))
            cp.restart()
            await h.until(lambda: cp.registrations == 2 and len(cp.pulls) > 2)
        before = [p.seq for p in cp.pulls if p.seq <= cp.registers[1].pull_seq]
        after = [p.seq for p in cp.pulls if p.seq > cp.registers[1].pull_seq]
        assert before[:2] == [1, 2] and after[0] == max(before) + 1
        assert [p.seq for p in cp.pulls] == sorted(p.seq for p in cp.pulls)
        assert cp.registers[0].pull_seq == cp.registers[0].report_seq == 0
        assert cp.registers[0].max_frame_bytes == DEFAULT_MAX_FRAME_BYTES  # its answers' limit
        last_report = cp.registers[1].report_seq
        assert last_report >= 1 and min(r.seq for r in cp.reports if r.seq > last_report) == (
            last_report + 1)
        [with_running] = [r for r in cp.reports if r.running]
        assert cp.reports[0].assigned == 0  # its credit, before any Assign
        assert 1 <= with_running.assigned <= cp.registers[1].pull_seq

    async def test_jobs_received_reach_the_executor_even_when_the_session_ends_meanwhile(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An Assign whose hand-over to the executor waits when the control
        plane forgets the worker still reaches the executor: the jobs the
        link says it holds when it registers again are jobs that run here
        (the control plane lets them end here, and runs no copy)."""
        gate = trio.Event()
        async with open_link(monkeypatch, gate=gate) as h:
            cp = h.control_plane
            for id in ("j1", "j2", "j3"):  # j1 is handled, j2 waits in the mailbox
                cp.to_assign = (Job(id=id, task="add", payload=b"p", priority=2, timeout=None),)
                await h.until(lambda: not cp.to_assign)
            await trio.sleep(1.0)  # j3's hand-over waits
            cp.restart()
            await trio.sleep(5.0)  # the heartbeat is answered UnknownWorker
            gate.set()
            await h.until(lambda: cp.registrations == 2)
            await h.until(lambda: len(h.executor_got) == 3)
        assert [job.id for m in h.executor_got for job in m.jobs] == ["j1", "j2", "j3"]
        assert [held.id for held in cp.registers[1].holding] == ["j1", "j2", "j3"]

    async def test_a_report_whose_answer_was_lost_goes_again_to_the_new_control_plane(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Report the control plane took but never answered (it died) is
        sent again after the restart: the control plane sees it twice, and
        dedupes; a Report answered before is not sent again."""
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            await h.send(finished("o0"))
            await h.until(lambda: cp.delivered() == ["o0"])
            cp.lose_next_report_answer = True
            await h.send(finished("o1"))
            await h.until(lambda: not cp.up)
            await h.send(finished("o2"))
            cp.restart()
            await h.until(lambda: "o2" in cp.delivered())
        assert cp.delivered() == ["o0", "o1", "o1", "o2"]

    async def test_a_report_in_flight_when_the_worker_is_forgotten_is_sent_after_registering(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Report still unanswered when the control plane says it no longer
        knows this worker (its heartbeat is answered ``UnknownWorker``) is
        kept: its outcomes go out, in order, once the link has registered
        again."""
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            await h.send(finished("o0"))
            await h.until(lambda: cp.delivered() == ["o0"])
            cp.unanswered = {Report}
            await h.send(finished("o1"))
            await h.until(lambda: len(cp.ignored) == 1)
            cp.unanswered = set()
            cp.known.clear()  # it declared the worker lost
            await h.until(lambda: cp.registrations == 2)
            await h.send(finished("o2"))
            await h.until(lambda: "o2" in cp.delivered())
            stats = await h.stats()
        assert [o.id for o in cp.ignored[0].finished] == ["o1"]
        assert cp.delivered() == ["o0", "o1", "o2"]
        assert (stats.buffered_outcomes, stats.outcomes_dropped_total) == (0, 0)

    async def test_a_report_answered_unknown_worker_registers_again_at_once(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Report answered ``UnknownWorker`` (its results were taken) makes
        the link register again at once, without waiting for a heartbeat or
        the parked Pull to say so."""
        async with open_link(monkeypatch) as h:
            cp = h.control_plane
            await h.send(finished("o0"))
            await h.until(lambda: cp.delivered() == ["o0"])
            cp.unanswered = {Heartbeat}
            cp.known.clear()  # it declared the worker lost
            sent_at = trio.current_time()
            await h.send(finished("o1"))
            await h.until(lambda: cp.registrations == 2)
        assert cp.delivered() == ["o0", "o1"]
        assert cp.register_times[-1] == sent_at

    async def test_a_draining_link_reports_what_is_left_before_it_deregisters(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a graceful stop, the outcome of the last job held goes out, and
        is answered, before ``Deregister``: the control plane never takes
        back (and runs again) a job whose result was on its way."""
        async with trio.open_nursery() as nursery:
            async with open_link(monkeypatch, pull_wait=1.0) as h:
                cp = h.control_plane
                cp.to_assign = (Job(id="j1", task="add", payload=b"p", priority=2,
                                    timeout=None),)
                await h.until(lambda: any(isinstance(m, Assign) and m.jobs
                                          for m in h.executor_got))
                cp.report_delay = 1.0

                async def end_the_job_once_draining() -> None:
                    await h.until(lambda: "Drain" in cp.events)
                    await h.send(finished("j1"))

                nursery.start_soon(end_the_job_once_draining)
            # Leaving the block stopped the node gracefully: the link drained.
        order = [e for e in cp.events if e.endswith(("Report", "Deregister"))]
        assert cp.delivered() == ["j1"]
        assert order[-4:] == ["Report", "answered Report", "Deregister", "answered Deregister"]

    async def test_jobs_handed_over_when_draining_run_and_are_reported_before_deregister(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The control plane answers the parked Pull with the jobs it had
        placed when it hears ``Drain``: the draining link waits for that
        answer, hands them to the Executor, and reports their outcomes
        before ``Deregister``."""
        async with trio.open_nursery() as nursery:
            async with open_link(monkeypatch) as h:
                cp = h.control_plane
                cp.assign_on_drain = (Job(id="last", task="add", payload=b"p", priority=2,
                                          timeout=None),)

                async def run_what_is_assigned() -> None:
                    await h.until(lambda: any(isinstance(m, Assign) and m.jobs
                                              for m in h.executor_got))
                    await h.send(finished("last"))

                nursery.start_soon(run_what_is_assigned)
        order = [e for e in cp.events if e.endswith(("Report", "Deregister"))]
        assert cp.delivered() == ["last"]
        assert order[-4:] == ["Report", "answered Report", "Deregister", "answered Deregister"]

    async def test_a_refused_registration_is_asked_again_after_request_timeout(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A control plane that refuses the worker (a full registry answers
        ``UnknownWorker``) is asked again every ``request_timeout``, not in a
        tight loop, with a line saying so each time; once it accepts, the
        link works again."""
        async with open_link(monkeypatch, request_timeout=4.0) as h:
            cp = h.control_plane
            cp.refuse_registers = 2
            cp.restart()
            await h.until(lambda: cp.registrations == 2)
            await h.send(finished("o1"))
            await h.until(lambda: cp.delivered() == ["o1"])
            stats = await h.stats()
        first, second, accepted = cp.register_times[1:]
        assert (second - first, accepted - second) == (pytest.approx(4.0), pytest.approx(4.0))
        refused = [r.getMessage() for r in caplog.records
                   if r.name == "fastworker.link" and "refused" in r.getMessage()]
        assert refused == ["link: registration refused (UnknownWorker); trying again"] * 2
        assert (stats.registered, stats.registrations_total) == (True, 2)

    async def test_a_backlog_goes_out_in_reports_of_bounded_size(
        self, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A backlog larger than one Report holds goes out in several, each
        at most ``REPORT_MAX_ITEMS`` outcomes and about half a frame, in order."""
        async with open_link(monkeypatch, max_frame_bytes=200_000) as h:
            cp = h.control_plane
            cp.up = False
            await h.send(finished(*[f"s{n}" for n in range(1200)]))
            big = [outcome(f"b{n}", b"x" * 30_000) for n in range(10)]
            await h.send(Finished(outcomes=tuple(big)))
            cp.restart()
            await h.until(lambda: cp.delivered()[-1:] == ["b9"])
        sizes = [len(report.finished) for report in cp.reports if report.finished]
        assert cp.delivered() == [f"s{n}" for n in range(1200)] + [f"b{n}" for n in range(10)]
        assert max(sizes) <= REPORT_MAX_ITEMS
        value_bytes = [sum(len(o.value or b"") for o in r.finished) for r in cp.reports]
        assert max(value_bytes) == 90_000  # three big ones: within half of 200 KB
