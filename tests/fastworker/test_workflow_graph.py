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
from fastworker.workflows.graph import Run, step_id


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


@given(graphs(), st.randoms(use_true_random=False))
def test_every_step_starts_once_after_its_parents_with_their_results(
        specs: list[StepSpec], rng: random.Random) -> None:
    run = Run("w", specs)
    started: list[int] = []
    running: list[int] = []
    while not run.over:
        for index in run.ready():
            args, _ = unpack_call(run.payload(index))
            spec = specs[index]
            parents = [f"r{p}" for p in spec.after]
            expected = {"none": (index,), "one": (*parents, index),
                        "list": (parents, index)}[spec.input]
            assert args == expected
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
