"""Workflows as written (chain, group, chord, a graph) and the flat graph
of steps they stand for."""

from __future__ import annotations

import pytest

from fastworker import task
from fastworker.payload import unpack_call
from fastworker.workflows import Workflow, chain, chord, group, steps


@task(name="tests.canvas.fetch")
def fetch(url: str) -> bytes:
    return url.encode()


@task(name="tests.canvas.resize")
def resize(data: bytes, width: int = 100) -> bytes:
    return data[:width]


@task(name="tests.canvas.merge")
def merge(parts: list[bytes]) -> bytes:
    return b"".join(parts)


def shape(workflow: object) -> list[tuple[str, tuple[int, ...], str]]:
    """Each step as (task without its module, parents, input)."""
    return [(s.task.removeprefix("tests.canvas."), s.after, s.input)
            for s in steps(workflow)]  # type: ignore[arg-type]


def test_a_chain_passes_each_result_to_the_next() -> None:
    flow = fetch.s("u") | resize.s(width=200) | merge.si()
    assert shape(flow) == [("fetch", (), "none"), ("resize", (0,), "one"),
                           ("merge", (1,), "none")]  # .si takes nothing
    assert shape(chain(fetch.s("u"), resize.s())) == shape(fetch.s("u") | resize.s())
    assert unpack_call(steps(flow)[1].payload) == ((), {"width": 200})


def test_a_group_runs_side_by_side_and_a_chord_takes_their_list() -> None:
    fan = group(resize.s(b"a"), resize.s(b"b"), resize.s(b"c"))
    assert shape(chord(fan, merge.s())) == [("resize", (), "none")] * 3 + [
        ("merge", (0, 1, 2), "list")]
    with pytest.raises(ValueError, match="ends in one step"):  # whose result would it be?
        steps(fan)
    assert shape(fan | merge.s()) == shape(chord(fan, merge.s()))
    # A group of one still gives a list.
    assert shape(group([resize.s(b"a")]) | merge.s())[-1] == ("merge", (0,), "list")


def test_a_group_in_a_chain_fans_out_and_in() -> None:
    flow = fetch.s("u") | group(resize.s(width=w) for w in (10, 20)) | merge.s()
    assert shape(flow) == [("fetch", (), "none"), ("resize", (0,), "one"),
                           ("resize", (0,), "one"), ("merge", (1, 2), "list")]


def test_a_group_in_a_group_is_flattened_and_a_chain_member_ends_in_one_step() -> None:
    nested = group(resize.s(b"a"), group(resize.s(b"b"), resize.s(b"c"))) | merge.s()
    assert shape(nested)[-1] == ("merge", (0, 1, 2), "list")
    members = group(fetch.s("u") | resize.s(), fetch.s("v") | resize.s()) | merge.s()
    assert shape(members) == [("fetch", (), "none"), ("resize", (0,), "one"),
                              ("fetch", (), "none"), ("resize", (2,), "one"),
                              ("merge", (1, 3), "list")]
    with pytest.raises(ValueError, match="must end in one step, not in a group"):
        steps(group(fetch.s("u") | group(resize.s(), resize.s())) | merge.s())


def test_a_graph_names_what_each_step_waits_for() -> None:
    wf = Workflow()
    a = wf.add(fetch.s("u"))
    b = wf.add(fetch.s("v"))
    left = wf.add(resize.s(width=1), after=[a])
    both = wf.add(merge.s(), after=[left, b])
    wf.add(merge.s([]), after=[both], takes=False)
    assert shape(wf) == [("fetch", (), "none"), ("fetch", (), "none"),
                         ("resize", (0,), "one"), ("merge", (2, 1), "list"),
                         ("merge", (3,), "none")]
    with pytest.raises(ValueError, match="waits for each parent once"):
        wf.add(merge.s(), after=[a, a])
    with pytest.raises(ValueError, match="is not a step of this workflow"):
        Workflow().add(merge.s(), after=[a])


def test_empty_workflows_are_refused() -> None:
    for build in (chain, group):
        with pytest.raises(ValueError, match="needs at least one step"):
            build()
    with pytest.raises(ValueError, match="needs at least one step"):
        steps(Workflow())


def test_a_map_maps_over_one_steps_result_and_nothing_else() -> None:
    """``a | b.map() | c``: b takes each item of a's result; c takes b's list."""
    assert shape(fetch.s("u") | resize.map(width=9) | merge.s()) == [
        ("fetch", (), "none"), ("resize", (0,), "each"), ("merge", (1,), "one")]
    [_, mapped, _] = steps(fetch.s("u") | resize.map(width=9) | merge.s())
    assert unpack_call(mapped.payload) == ((), {"width": 9})
    for wrong in (group(fetch.s("a"), fetch.s("b")) | resize.map(), chain(resize.map())):
        with pytest.raises(ValueError, match="follows one step"):
            steps(wrong)
    wf = Workflow()
    a = wf.add(fetch.s("u"))
    wf.add(resize.map(), after=[a])
    assert [spec.input for spec in wf.specs] == ["none", "each"]
    with pytest.raises(ValueError, match="waits for one step"):
        Workflow().add(resize.map())
