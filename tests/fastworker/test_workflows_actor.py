"""The Workflows actor against peers played by the test (an inbox that
accepts, a store whose records and watch the test sets), its methods driven
directly: the cases a process test cannot time (a record handed out while a
run stops, a restart with a failure under keep_going, a retry whose store
does not answer, a stale time limit, byte bounds)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors import ActorContext, CallTimeout
from actors.requests import Requests
from fastworker.internal import UnknownTasks
from fastworker.journal.ops import PutWorkflow
from fastworker.messages import (
    Accepted,
    Cancel,
    Cancelled,
    CancelReply,
    CancelWorkflow,
    Records,
    Rejected,
    RemoteError,
    RetryWorkflow,
    StartWorkflow,
    StatusQuery,
    Submit,
    TaskRecord,
    Watch,
    WorkflowStep,
)
from fastworker.payload import join_parts, pack_call, pack_value
from fastworker.workflows.actor import Workflows, WorkflowsOptions

SMALL = pack_call((), {})


class Inbox:
    """Accepts every Submit, and remembers it."""

    def __init__(self) -> None:
        self.submitted: list[Submit] = []
        self.cancelled: list[str] = []

    async def call(self, message: Any, timeout: Any = None) -> Any:
        if isinstance(message, Requests):
            self.submitted.extend(message.messages)
            return [Accepted(id=submit.id) for submit in message.messages]
        if isinstance(message, UnknownTasks):
            return ()
        if isinstance(message, Cancel):
            self.cancelled.append(message.id)
            return CancelReply(id=message.id, outcome="cancelled")
        raise AssertionError(message)

    @property
    def ids(self) -> list[str]:
        return [submit.id for submit in self.submitted]


class Store:
    """Records by id; a watch hands out what ``ready`` holds, once."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.records: dict[str, TaskRecord] = {}
        self.ready: list[TaskRecord] = []
        self.answers = True

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    async def call(self, message: Any, timeout: Any = None) -> Any:
        if not self.answers:
            raise CallTimeout("the store is busy")
        if isinstance(message, StatusQuery):
            return Records(records=tuple(self.records.get(i, TaskRecord(id=i, state="unknown"))
                                         for i in message.ids))
        if isinstance(message, Watch):
            ready, self.ready = tuple(self.ready), []
            return Records(records=ready, epoch="e1", unknown=tuple(
                i for i in message.ids if i not in self.records))
        raise AssertionError(message)


class Dispatcher:
    async def call(self, message: Any, timeout: Any = None) -> Any:
        return CancelReply(id=message.id, outcome="cancelled")


def workflows(**options: Any) -> tuple[Workflows, Inbox, Store]:
    inbox, store = Inbox(), Store()
    context = ActorContext(name="workflows", kind="fastworker.Workflows",
                           inbox=None,  # type: ignore[arg-type]
                           refs={"inbox": inbox, "results": store,  # type: ignore[dict-item]
                                 "dispatcher": Dispatcher()})
    return Workflows(WorkflowsOptions(**options), context), inbox, store


async def start(actor: Workflows, message: StartWorkflow) -> Any:
    """What a StartWorkflow alone is answered."""
    return (await actor._start_many([message]))[0]


def step(task: str, *after: int, input: str = "none", payload: bytes = SMALL) -> WorkflowStep:
    return WorkflowStep(task=task, payload=payload, after=after, input=input)


def succeeded(task_id: str, value: object = None) -> TaskRecord:
    return TaskRecord(id=task_id, state="succeeded", value=pack_value(value))


def failed(task_id: str) -> TaskRecord:
    return TaskRecord(id=task_id, state="failed", error=RemoteError(type="E", message="x"))


async def test_a_map_over_an_empty_list_lets_what_follows_start_once() -> None:
    """An empty list maps to an empty list at once; the steps that follow,
    and the siblings beside it, are each submitted once, and the run ends."""
    actor, inbox, _ = workflows()
    await start(actor, StartWorkflow(id="w", steps=(
        step("p"), step("q"), step("m", 0, input="each"), step("a", 0, input="one"),
        step("b", 0, 1, input="list"), step("end", 2, 3, 4, input="list"))))
    await actor._ended((TaskRecord(id="w.0", state="succeeded", value=join_parts([])),))
    assert sorted(inbox.ids) == ["w.0", "w.1", "w.3"]
    await actor._ended((succeeded("w.1", 1),))
    await actor._ended((succeeded("w.3", 3),))
    await actor._ended((succeeded("w.4", 4),))
    assert sorted(inbox.ids) == ["w.0", "w.1", "w.3", "w.4", "w.5"]
    await actor._ended((succeeded("w.5", "done"),))
    assert "w" not in actor.runs and actor._kept["w"].state == "succeeded"


async def test_records_the_watch_brought_are_acted_on_when_a_run_stops_mid_way() -> None:
    """A watch hands out any workflow's ended steps: a run that stops while
    starting its steps (a step over the size limit) still passes them on."""
    actor, _, store = workflows()
    await start(actor, StartWorkflow(id="other", steps=(step("t"),)))
    await start(actor, StartWorkflow(id="w", steps=(
        step("p"), step("m", 0, input="each"),
        step("n", 0, input="one", payload=pack_call(("x" * 4_500_000,), {})),
        step("end", 1, 2, input="list"))))
    store.ready.append(succeeded("other.0", 1))
    parts = join_parts([pack_value(1), pack_value("z" * 4_000_000)])
    await actor._ended((TaskRecord(id="w.0", state="succeeded", value=parts),))
    assert "w" not in actor.runs  # n's inputs are over the limit: failed
    assert "other" not in actor.runs and actor._kept["other"].state == "succeeded"


async def test_keep_going_starts_the_siblings_of_a_step_over_the_size_limit() -> None:
    actor, inbox, _ = workflows()
    await start(actor, StartWorkflow(id="w", keep_going=True, steps=(
        step("p"), step("a", 0, input="one", payload=pack_call(("x" * 4_000_000,), {})),
        step("b", 0, input="one"), step("end", 1, 2, input="list"))))
    await actor._ended((succeeded("w.0", "y" * 5_000_000),))
    assert inbox.ids == ["w.0", "w.2"]
    await actor._ended((succeeded("w.2", 2),))
    assert actor._kept["w"].state == "failed" and "step 1 (a)" in actor._kept["w"].error


async def test_a_keep_going_run_restored_with_a_failed_step_starts_its_other_branches() -> None:
    actor, inbox, store = workflows()
    store.records = {"w.0": failed("w.0"), "w.1": succeeded("w.1", 1)}
    start = StartWorkflow(id="w", keep_going=True, steps=(
        step("a"), step("b"), step("c", 1, input="one"), step("end", 0, 2, input="list")))
    await actor._recover((PutWorkflow(start, time.time()),))
    assert inbox.ids == ["w.2"]
    run = actor.runs["w"]
    assert run.states == ["failed", "succeeded", "started", "skipped"]


async def test_a_retry_whose_store_does_not_answer_leaves_the_workflow_kept() -> None:
    actor, _, store = workflows()
    await start(actor, StartWorkflow(id="w", steps=(step("a"),)))
    await actor._ended((failed("w.0"),))
    store.answers = False
    answer = await actor._answer_one(RetryWorkflow(id="w"))
    assert answer.error == "Unavailable"
    store.answers = True
    assert "w" in actor._kept and "w" not in actor.runs
    assert await actor._answer_one(RetryWorkflow(id="w")) == Accepted(id="w")


async def test_a_stale_stop_does_not_end_the_run_a_retry_began() -> None:
    """A time limit checked for a run that failed and was retried since
    stops nothing: the retried run goes on."""
    actor, _, _ = workflows()
    await start(actor, StartWorkflow(id="w", time_limit=60, steps=(step("a"), step("b"))))
    old, serial = actor.runs["w"], actor._serials["w"]
    await actor._ended((failed("w.0"),))
    assert await actor._retry("w") == Accepted(id="w")
    assert actor._current("w", serial) is None
    await actor._stop(old, old.cancel("TimeLimitExceeded"))
    assert actor.runs["w"] is not old and actor.runs["w"].generation == 1


async def test_bytes_held_by_kept_workflows_are_counted_and_a_refused_start_keeps_them() -> None:
    actor, _, _ = workflows(max_bytes=3_000_000)
    big = pack_call(("x" * 1_000_000,), {})
    kept = StartWorkflow(id="k", steps=(step("a", payload=big),))
    await actor._recover((PutWorkflow(kept, time.time(), failed=True),))
    assert actor._held_bytes == actor._kept_bytes == len(big)
    await start(actor, StartWorkflow(id="running", steps=(
        step("a", payload=pack_call(("x" * 1_500_000,), {})),)))
    refused = await start(actor, StartWorkflow(id="big", steps=(
        step("a", payload=pack_call(("x" * 2_000_000,), {})),)))
    assert refused.error == "QueueFull" and "k" in actor._kept  # nothing let go for it
    fits = await start(actor, StartWorkflow(id="fits", steps=(
        step("a", payload=pack_call(("x" * 1_200_000,), {})),)))
    assert fits == Accepted(id="fits") and "k" not in actor._kept  # the kept one made room
    assert actor._kept_bytes == 0 and actor._held_bytes > 0


async def test_a_map_fails_as_soon_as_its_members_results_are_past_the_size_limit() -> None:
    actor, inbox, _ = workflows()
    await start(actor, StartWorkflow(id="w", steps=(
        step("p"), step("m", 0, input="each"), step("end", 1, input="one"))))
    await actor._ended((TaskRecord(id="w.0", state="succeeded",
                                   value=join_parts([pack_value(i) for i in range(3)])),))
    assert inbox.ids == ["w.0", "w.1.m0", "w.1.m1", "w.1.m2"]
    await actor._ended((succeeded("w.1.m0", "y" * 5_000_000),))
    assert "w" in actor.runs
    await actor._ended((succeeded("w.1.m1", "y" * 5_000_000),))
    assert "w" not in actor.runs and "past the limit" in actor._kept["w"].error
    assert inbox.cancelled == ["w.1.m2"]


async def test_a_step_watched_before_the_store_heard_of_it_is_not_failed() -> None:
    """A watch that names a step the store has no record of yet leaves it
    watched; a record the store dropped ("unknown", with why) fails it."""
    actor, _, store = workflows()
    await start(actor, StartWorkflow(id="w", steps=(step("a"),)))
    assert await actor._watch(("w.0",), wait=0.0) == ()
    assert "w" in actor.runs
    store.ready.append(TaskRecord(id="w.0", state="unknown", error=RemoteError(
        type="Dropped", message="the store's max_entries dropped it")))
    await actor._ended(await actor._watch(("w.0",), wait=0.0))
    assert "Dropped" in actor._kept["w"].error


async def test_a_step_the_queue_has_no_room_for_waits_for_room() -> None:
    """QueueFull is not a failure of the workflow: the step (a map's member
    too) is submitted again until the queue takes it."""
    actor, inbox, store = workflows()
    full = {"w.1", "w.2.m1"}
    accept = inbox.call

    async def call(message: Any, timeout: Any = None) -> Any:
        if isinstance(message, Requests):
            inbox.submitted.extend(message.messages)
            return [Rejected(id=submit.id, error="QueueFull", message="full")
                    if submit.id in full else Accepted(id=submit.id)
                    for submit in message.messages]
        return await accept(message, timeout)

    inbox.call = call  # type: ignore[method-assign]
    await start(actor, StartWorkflow(id="w", steps=(
        step("p"), step("q", 0, input="one"), step("m", 0, input="each"),
        step("end", 1, 2, input="list"))))
    await actor._ended((TaskRecord(id="w.0", state="succeeded",
                                   value=join_parts([pack_value(1), pack_value(2)])),))
    assert set(actor._parked) == {"w.1", "w.2.m1"} and "w" in actor.runs
    await actor._ended(await actor._submit_parked())
    assert set(actor._parked) == {"w.1", "w.2.m1"}  # still full
    full.clear()
    await actor._ended(await actor._submit_parked())
    assert actor._parked == {} and inbox.ids.count("w.1") == 3
    for task_id in ("w.1", "w.2.m0", "w.2.m1"):
        await actor._ended((succeeded(task_id, 1),))
    assert "w.3" in inbox.ids


class Journal:
    """Remembers each write (a call is a commit)."""

    def __init__(self) -> None:
        self.commits: list[tuple[Any, ...]] = []

    async def call(self, message: Any, timeout: Any = None) -> Any:
        self.commits.append(message.ops)
        return True

    async def send(self, message: Any) -> None:
        pass


async def test_workflows_started_together_share_their_look_ups_and_one_commit() -> None:
    """A request of several StartWorkflow: each answered as if alone (a
    resend of one in the same request as it is), the ones taken written in
    one commit."""
    actor, inbox, store = workflows()
    journal = Journal()
    actor._journal = journal  # type: ignore[assignment]
    store.records["used.0"] = succeeded("used.0")

    async def known(message: Any, timeout: Any = None) -> Any:
        if isinstance(message, UnknownTasks):
            return tuple((name, f"unknown task {name!r}") for name in message.names
                         if name == "nope")
        return await Inbox.call(inbox, message, timeout)

    inbox.call = known  # type: ignore[method-assign]
    a = StartWorkflow(id="a", steps=(step("t"),))
    answers = await actor.handle(Requests(messages=(
        a, StartWorkflow(id="bad", steps=(step("nope"),)), a,
        StartWorkflow(id="used", steps=(step("t"),)), StartWorkflow(id="b", steps=(step("t"),)),
    ), peer="test"))
    assert [(type(x).__name__, getattr(x, "error", "")) for x in answers] == [
        ("Accepted", ""), ("Rejected", "UnknownTask"), ("Accepted", ""),
        ("Rejected", "InvalidSubmission"), ("Accepted", "")]
    assert [[op.start.id for op in ops] for ops in journal.commits] == [["a", "b"]]
    assert sorted(inbox.ids) == ["a.0", "b.0"]


def answering(inbox: Inbox, answer_for: Any) -> None:
    """The inbox answers ``answer_for(id)`` (``None``: Accepted)."""
    accept = inbox.call

    async def call(message: Any, timeout: Any = None) -> Any:
        if isinstance(message, Requests):
            inbox.submitted.extend(message.messages)
            return [answer_for(s.id) or Accepted(id=s.id) for s in message.messages]
        return await accept(message, timeout)

    inbox.call = call  # type: ignore[method-assign]


def watched(store: Store) -> list[str]:
    """The ids the store is asked to watch, as they come."""
    ids: list[str] = []
    call = store.call

    async def spy(message: Any, timeout: Any = None) -> Any:
        if isinstance(message, Watch):
            ids.extend(message.ids)
        return await call(message, timeout)

    store.call = spy  # type: ignore[method-assign]
    return ids


async def test_a_refusal_that_ends_a_run_does_not_upset_the_rest_of_the_request() -> None:
    """One of a run's steps refused (its run ends), another of it refused
    for want of room in the same answer: the other workflows started with
    it run, and are answered Accepted."""
    actor, inbox, store = workflows()
    ids = watched(store)
    answering(inbox, lambda i: {"w1.0": Rejected(id=i, error="UnknownTask", message="gone"),
                                "w1.1": Rejected(id=i, error="QueueFull", message="full")}.get(i))
    answers = await actor._answer_many([StartWorkflow(id="w1", steps=(step("a"), step("b"))),
                                        StartWorkflow(id="w2", steps=(step("c"),))])
    assert answers == [Accepted(id="w1"), Accepted(id="w2")]
    assert "w2.0" in ids and actor._parked == {} and actor._kept["w1"].state == "failed"


async def test_steps_prepared_for_one_run_are_sent_when_another_runs_map_cannot_expand() -> None:
    actor, inbox, store = workflows()
    await start(actor, StartWorkflow(id="a", steps=(step("p"), step("q", 0, input="one"))))
    await start(actor, StartWorkflow(id="b", steps=(step("p"), step("m", 0, input="each"))))
    store.answers = False  # the map's look-up of its members fails: its run fails
    await actor._ended((succeeded("a.0", 1), TaskRecord(
        id="b.0", state="succeeded", value=join_parts([pack_value(1)]))))
    assert "a.1" in inbox.ids and "Unavailable" in actor._kept["b"].error


async def test_a_stopped_workflows_running_map_step_record_ends() -> None:
    actor, _, store = workflows()
    await start(actor, StartWorkflow(id="w", steps=(step("p"), step("m", 0, input="each"))))
    await actor._ended((TaskRecord(id="w.0", state="succeeded",
                                   value=join_parts([pack_value(1), pack_value(2)])),))
    await actor._answer_many([CancelWorkflow(id="w")])
    assert any(isinstance(m, Cancelled) and "w.1" in m.ids for m in store.sent)


async def test_a_watch_names_at_most_what_one_may_and_the_rest_next(
        monkeypatch: Any) -> None:
    import fastworker.workflows.state as state
    monkeypatch.setattr(state, "MAX_QUERY_IDS", 2)
    actor, _, store = workflows()
    ids = watched(store)
    await actor._watch(("a", "b", "c"), wait=0.0)
    assert ids == ["a", "b"] and actor._rewatch == {"c"}


async def test_an_error_handler_the_queue_has_no_room_for_waits_for_room() -> None:
    actor, inbox, _ = workflows()
    full = {"w.error"}
    answering(inbox, lambda i: Rejected(id=i, error="QueueFull", message="full")
              if i in full else None)
    await start(actor, StartWorkflow(id="w", on_error=step("alert", input="one"),
                                     steps=(step("a"),)))
    await actor._ended((failed("w.0"),))
    assert [s.id for s in actor._parked_handlers] == ["w.error"]
    full.clear()
    handlers, actor._parked_handlers = actor._parked_handlers, []
    await actor._submit_handlers(handlers)
    assert actor._parked_handlers == [] and inbox.ids.count("w.error") == 2


async def test_a_workflow_cancel_the_actor_cannot_carry_out_is_unavailable_not_an_assertion(
) -> None:
    from fastworker import Unavailable
    from fastworker.cancel import cancel_task

    async def inbox(message: Any) -> Any:
        return CancelReply(id=message.id, outcome="unknown")

    async def workflows_actor(message: Any) -> Any:
        return Rejected(id=message.id, error="Unavailable", message="CallTimeout: the store")

    with pytest.raises(Unavailable, match="could not cancel w: CallTimeout: the store"):
        await cancel_task("w", at_inbox=inbox, at_dispatcher=inbox, at_workflows=workflows_actor)
