"""A running workflow's graph (``fastworker.workflows.graph``): every step
starts once, after its parents succeeded, with their results; a failure
stops what has not started; results are let go once taken."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastworker.payload import pack_call, pack_value, unpack_call
from fastworker.workflows.canvas import StepSpec
from fastworker.workflows.graph import Restored, Run, Seen, step_id


@st.composite
def graphs(draw: st.DrawFn) -> list[StepSpec]:
    size = draw(st.integers(1, 12))
    specs = []
    for index in range(size):
        after = tuple(sorted(draw(st.sets(st.integers(0, index - 1), max_size=3))
                             if index else ()))
        input = draw(st.sampled_from(["none", "list"] + (["one"] if len(after) == 1 else [])))
        specs.append(StepSpec(task=f"t{index}", payload=pack_call((index,), {}), after=after,
                              input=input if after else "none"))
    return specs


def assert_called_with_inputs(run: Run, specs: list[StepSpec], index: int) -> None:
    """Step ``index`` is called with its parents' results (``r<parent>``)
    as its input says, then its own argument (its index)."""
    args, _ = unpack_call(run.payload(index))
    spec = specs[index]
    parents = [f"r{p}" for p in spec.after]
    assert args == {"none": (index,), "one": (*parents, index),
                    "list": (parents, index)}[spec.input]


@given(graphs(), st.randoms(use_true_random=False))
def test_every_step_starts_once_after_its_parents_with_their_results(
        specs: list[StepSpec], rng: random.Random) -> None:
    run = Run("w", specs)
    started: list[int] = []
    running: list[int] = []
    while not run.over:
        for index in run.ready():
            assert_called_with_inputs(run, specs, index)
            run.started(index)
            started.append(index)
            running.append(index)
        assert running, "nothing runs, yet the run is not over"
        done = running.pop(rng.randrange(len(running)))
        assert all(p in started and p not in running for p in specs[done].after)
        run.succeeded(done, pack_value(f"r{done}"))
    assert sorted(started) == list(range(len(specs)))
    assert run.values == {} and run.failure is None


@given(graphs(), st.data())
def test_a_failure_starts_nothing_more_and_names_the_step(specs: list[StepSpec],
                                                         data: st.DataObject) -> None:
    run = Run("w", specs)
    failing = data.draw(st.integers(0, len(specs) - 1))
    started: set[int] = set()
    while failing not in started:
        ready = run.ready()
        for index in ready:
            run.started(index)
            started.add(index)
        for index in ready:
            if index != failing:
                run.succeeded(index, pack_value(index))
    still = run.failed(failing, "ValueError: no")
    assert run.failure is not None and (run.failure.step, run.failure.task) == (
        failing, f"t{failing}")
    assert run.ready() == [] and run.values == {}
    assert still == [] and run.over  # everything else had ended or is skipped
    assert all(state == "skipped" for index, state in enumerate(run.states)
               if index not in started)


def test_a_step_still_running_at_a_failure_is_named_for_cancelling() -> None:
    specs = [StepSpec(task="a", payload=pack_call((), {})),
             StepSpec(task="b", payload=pack_call((), {})),
             StepSpec(task="c", payload=pack_call((), {}), after=(0, 1), input="list")]
    run = Run("w", specs)
    for index in run.ready():
        run.started(index)
    assert run.failed(0, "boom") == [1]
    assert run.states == ["failed", "started", "skipped"] and not run.over
    run.failed(1, "cancelled")  # its cancel came back
    assert run.over and run.failure is not None and run.failure.step == 0


def test_a_step_waits_only_for_steps_before_it() -> None:
    with pytest.raises(ValueError, match="waits for a step that is not before it"):
        Run("w", [StepSpec(task="a", payload=b"", after=(0,))])
    assert step_id("wf-1", 3) == "wf-1.3"


def test_a_clients_watch_session_cannot_be_the_control_planes() -> None:
    """The Workflows actor follows its steps in a watch session no client
    may take (its records would go to the client)."""
    from fastworker.limits import check_query
    from fastworker.messages import Watch
    watch = Watch(session="fastworker.workflows", ids=("a.0",), wait=1.0)
    assert "are the control plane's own" in (check_query(watch) or "")
    assert check_query(watch, internal=True) is None


def test_only_the_first_failure_names_the_steps_to_cancel() -> None:
    """A group of 50 where one fails: the other 49 are named once to be
    cancelled; each of their ends (cancelled) names none again."""
    members = [StepSpec(task=f"m{i}", payload=pack_call((), {})) for i in range(50)]
    run = Run("w", [*members, StepSpec(task="merge", payload=pack_call((), {}),
                                       after=tuple(range(50)), input="list")])
    for index in run.ready():
        run.started(index)
    assert run.failed(0, "boom") == list(range(1, 50))
    assert all(run.failed(index, "cancelled") == [] for index in range(1, 50))
    assert run.over and run.states[50] == "skipped"
    assert run.cancel("late") == [] and run.failure is not None and run.failure.step == 0


@given(graphs(), st.randoms(use_true_random=False), st.data())
def test_a_run_restored_from_its_steps_records_starts_each_step_once_in_all(
        specs: list[StepSpec], rng: random.Random, data: st.DataObject) -> None:
    """A restart part way: each step's record (succeeded with its value, or
    still live) is all a new run gets; it goes on with the same inputs, and
    no step starts twice across the two runs."""
    before = Run("w", specs)
    started: list[int] = []
    running: list[int] = []
    ended: dict[int, bytes] = {}
    for _ in range(data.draw(st.integers(0, 2 * len(specs)))):
        for index in before.ready():
            before.started(index)
            started.append(index)
            running.append(index)
        if not running:
            break
        done = running.pop(rng.randrange(len(running)))
        ended[done] = pack_value(f"r{done}")
        before.succeeded(done, ended[done])
    seen = [Seen(step_id("w", index), "succeeded", ended[index]) if index in ended
            else Seen(step_id("w", index), "running") if index in running else None
            for index in range(len(specs))]
    after = Run("w", specs)
    restored = after.restore(seen)
    assert sorted(restored.running) == sorted(running) and restored.cancel == []
    assert after.ids == [step_id("w", i) if i in ended or i in running else ""
                         for i in range(len(specs))]
    again: list[int] = []
    while not after.over:
        for index in after.ready():
            assert_called_with_inputs(after, specs, index)
            after.started(index)
            again.append(index)
            running.append(index)
        done = running.pop(rng.randrange(len(running)))
        after.succeeded(done, pack_value(f"r{done}"))
    assert sorted(started + again) == list(range(len(specs)))
    assert after.values == {} and after.failure is None


def test_a_restored_run_with_a_failed_step_fails_and_a_retry_runs_it_again() -> None:
    """Restored as they were, a failed step fails the run (its running
    sibling to cancel); restored for a retry, the failed and cancelled steps
    wait to run again under the new generation's ids, the others keep their
    results."""
    a = pack_call((), {})
    specs = [StepSpec(task="a", payload=a), StepSpec(task="b", payload=a),
             StepSpec(task="c", payload=a),
             StepSpec(task="d", payload=a, after=(0, 1, 2), input="list")]
    seen = [Seen("w.0", "succeeded", pack_value("r0")), Seen("w.1", "failed", error="E: x"),
            Seen("w.2", "running"), None]
    run = Run("w", specs)
    assert run.restore(seen) == Restored(running=[2], cancel=[2])
    assert run.failure is not None and (run.failure.step, run.failure.error) == (1, "E: x")
    assert run.states == ["succeeded", "failed", "started", "skipped"]

    retried = Run("w", specs)
    retried.generation = 1
    seen[2] = Seen("w.2", "cancelled")
    assert retried.restore(seen, retry=True) == Restored(running=[], cancel=[])
    assert retried.ready() == [1, 2]
    for index in (1, 2):
        retried.started(index)
        retried.succeeded(index, pack_value(f"r{index}"))
    assert retried.ids == ["w.0", "w.1.1", "w.2.1", ""]
    assert retried.ready() == [3]
    args, _ = unpack_call(retried.payload(3))
    assert args == (["r0", "r1", "r2"],)


def test_a_step_whose_record_is_gone_counts_as_done_unless_its_result_is_still_needed() -> None:
    """No record, but its child has one: it ran long ago. Its result is
    needed by a step still to start: the run fails, naming it."""
    a = pack_call((), {})
    specs = [StepSpec(task="a", payload=a), StepSpec(task="b", payload=a, after=(0,),
                                                     input="one"),
             StepSpec(task="c", payload=a, after=(0,), input="one")]
    run = Run("w", specs)
    run.restore([None, Seen("w.1", "succeeded", pack_value(1)), None])
    assert run.failure is not None and run.failure.step == 0
    assert "no longer kept" in run.failure.error and run.over
    kept = Run("w", specs[:2])
    kept.restore([None, Seen("w.1", "succeeded", pack_value(1))])
    assert kept.failure is None and kept.over


@given(graphs(), st.data())
def test_keep_going_skips_only_what_waits_for_the_failed_step(specs: list[StepSpec],
                                                               data: st.DataObject) -> None:
    """Every step runs but the failed one's descendants; the run is over
    once they end, failed, naming the step."""
    failing = data.draw(st.integers(0, len(specs) - 1))
    below, frontier = set(), [failing]
    while frontier:
        parent = frontier.pop()
        for index, spec in enumerate(specs):
            if parent in spec.after and index not in below:
                below.add(index)
                frontier.append(index)
    run = Run("w", specs, keep_going=True)
    started = []
    while not run.over:
        ready = run.ready()
        assert ready, "nothing to start, yet the run is not over"
        for index in ready:
            run.payload(index)
            run.started(index)
            started.append(index)
            if index == failing:
                assert run.failed(index, "E: boom") == []  # nothing else is cancelled
            else:
                run.succeeded(index, pack_value(index))
    assert sorted(started) == sorted(set(range(len(specs))) - below)
    assert run.failure is not None and run.failure.step == failing and not run.stopped
    assert all(run.states[index] == "skipped" for index in below)
    assert run.values == {}


def test_a_map_step_has_a_member_per_item_and_its_result_is_theirs_in_order() -> None:
    """The step before a .map() is asked for its result in parts; each
    member gets one item first; the step's result joins the members' in
    item order, whatever order they end in."""
    from fastworker.payload import join_parts, unpack_value, wants_parts
    specs = [StepSpec(task="split", payload=pack_call((), {})),
             StepSpec(task="f", payload=pack_call((7,), {}), after=(0,), input="each"),
             StepSpec(task="sum", payload=pack_call((), {}), after=(1,), input="one")]
    run = Run("w", specs)
    assert wants_parts(run.payload(0))[1]
    run.started(0)
    run.succeeded(0, join_parts([pack_value("a"), pack_value("b"), pack_value("c")]))
    assert run.ready() == [1]
    calls = [unpack_call(payload) for payload in run.member_payloads(1)]
    assert calls == [(("a", 7), {}), (("b", 7), {}), (("c", 7), {})]
    assert run.started_members(1, 3) is None
    assert [run.member_id(1, i) for i in range(3)] == ["w.1.m0", "w.1.m1", "w.1.m2"]
    assert run.member_succeeded(1, 2, pack_value("C")) is None
    assert run.member_succeeded(1, 2, pack_value("again")) is None  # a repeated record
    assert run.member_succeeded(1, 0, pack_value("A")) is None
    assert run.open_members(1) == [1]
    joined = run.member_succeeded(1, 1, pack_value("B"))
    assert joined is not None and unpack_value(joined) == ["A", "B", "C"]
    run.succeeded(1, joined)
    args, _ = unpack_call(run.payload(2))
    assert args == (["A", "B", "C"],)


def test_steps_whose_records_are_gone_count_as_run_if_any_step_after_them_ran() -> None:
    """a -> b -> c with a's and b's records gone and c running: neither
    runs again. For a retry, a parent whose result is gone and whose only
    child runs again is run again too (its result is needed)."""
    a = pack_call((), {})
    specs = [StepSpec(task="a", payload=a), StepSpec(task="b", payload=a, after=(0,),
                                                     input="one"),
             StepSpec(task="c", payload=a, after=(1,), input="one")]
    run = Run("w", specs)
    assert run.restore([None, None, Seen("w.2", "running")]) == Restored(running=[2], cancel=[])
    assert run.ready() == [] and run.states == ["succeeded", "succeeded", "started"]
    retried = Run("w", specs)
    retried.generation = 1
    retried.restore([None, Seen("w.1", "failed", error="E: x"), None], retry=True)
    assert retried.failure is None and retried.ready() == [0]


def test_a_map_step_found_running_expands_again_after_a_restart() -> None:
    """Its own record is live while its members run: restored, it expands
    again (its members' records say which ran)."""
    a = pack_call((), {})
    specs = [StepSpec(task="a", payload=a),
             StepSpec(task="m", payload=a, after=(0,), input="each")]
    from fastworker.payload import join_parts
    run = Run("w", specs)
    restored = run.restore([Seen("w.0", "succeeded", join_parts([pack_value(1)])),
                            Seen("w.1", "running")])
    assert restored.running == [] and run.ready() == [1]
    assert len(run.member_payloads(1)) == 1
