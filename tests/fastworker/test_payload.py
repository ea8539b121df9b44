"""Payloads: arguments and results as bytes, and their limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastworker import InvalidSubmission
from fastworker.payload import (
    join_parts,
    pack_call,
    pack_value,
    split_parts,
    split_result,
    unpack_call,
    unpack_value,
    wants_parts,
    with_inputs,
)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1, 2.5, "x", b"y", True, None), {"k": 3}),
        (([1, 2], {"a": (3,)}), {}),
        ((lambda x: x * 2,), {}),  # cloudpickle sends it by value
    ],
    ids=["empty", "plain", "containers", "lambda"],
)
def test_calls_round_trip(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    """Whatever path packs them, arguments come back equal (a function, working)."""
    unpacked_args, unpacked_kwargs = unpack_call(pack_call(args, kwargs))
    if args and callable(args[0]):
        assert unpacked_args[0](21) == 42
    else:
        assert (unpacked_args, unpacked_kwargs) == (args, kwargs)


@pytest.mark.parametrize("value", [None, 3, "text", b"\x00", [1, {"a": 2}], {1, 2}])
def test_values_round_trip(value: object) -> None:
    """Return values come back equal."""
    assert unpack_value(pack_value(value)) == value


def test_unpicklable_arguments_are_an_invalid_submission() -> None:
    """Arguments that cannot be pickled are refused with the reason."""
    import threading

    with pytest.raises(InvalidSubmission, match="cannot send the arguments: TypeError"):
        pack_call((threading.Lock(),), {})


def test_arguments_over_the_limit_are_refused() -> None:
    """A payload over the limit is refused with its size."""
    with pytest.raises(InvalidSubmission, match="over the limit of 100"):
        pack_call((b"x" * 1000,), {}, limit=100)


# -- calls with inputs (a workflow step's parents' results) ----------------------

values = st.one_of(st.integers(), st.text(max_size=20), st.binary(max_size=20), st.none(),
                   st.lists(st.integers(), max_size=5))


@given(args=st.lists(values, max_size=4), kwargs=st.dictionaries(st.text(max_size=5), values,
                                                                max_size=3),
       inputs=st.lists(values, max_size=6))
def test_a_list_of_inputs_comes_first_in_order(args: list[object], kwargs: dict[str, object],
                                               inputs: list[object]) -> None:
    call = with_inputs(pack_call(tuple(args), kwargs), [pack_value(v) for v in inputs],
                       as_list=True)
    assert unpack_call(call) == ((inputs, *args), kwargs)


@given(args=st.lists(values, max_size=4), value=values)
def test_one_input_is_the_first_argument(args: list[object], value: object) -> None:
    call = with_inputs(pack_call(tuple(args), {"k": 1}), [pack_value(value)], as_list=False)
    assert unpack_call(call) == ((value, *args), {"k": 1})


def test_one_input_means_one() -> None:
    with pytest.raises(ValueError, match="one input expected, got 2"):
        with_inputs(pack_call((), {}), [pack_value(1), pack_value(2)], as_list=False)


def test_a_call_with_inputs_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="over the limit of 100"):
        with_inputs(pack_call((), {}), [pack_value(b"x" * 200)], as_list=True, limit=100)


def test_a_broken_call_with_inputs_is_a_value_error_at_every_cut() -> None:
    """Cut short anywhere, or with bytes added, the framing says so
    (the executor fails the task as an invalid payload)."""
    call = with_inputs(pack_call((1,), {}), [pack_value("a"), pack_value("b")], as_list=True)
    for cut in range(5, len(call)):
        with pytest.raises(ValueError):
            unpack_call(call[:cut])
    with pytest.raises(ValueError, match="do not add up"):
        unpack_call(call + b"x")


def test_a_step_with_inputs_is_shown_without_running_its_pickles() -> None:
    """The dashboard and the command line show a workflow step's arguments
    with its parents' results first, as the worker will call it."""
    from fastworker.peek import peek_call
    call = with_inputs(pack_call((3,), {"width": 9}), [pack_value("a"), pack_value("b")],
                       as_list=True)
    assert peek_call(call) == ("(['a', 'b'], 3)", "{'width': 9}")
    one = with_inputs(pack_call((), {}), [pack_value(7)], as_list=False)
    assert peek_call(one) == ("(7,)", "{}")


@given(st.lists(st.one_of(st.integers(), st.text(), st.binary(), st.none()), max_size=20))
def test_a_result_in_parts_is_split_without_unpickling_and_read_back_as_a_list(
        items: list[object]) -> None:
    """A step before a .map() returns its list in parts: the control plane
    splits them (no pickle run), each part is one item's value, joined
    again they read back as the list; a call marked for it runs as usual."""
    from fastworker.calls import pack_result
    value, error, _ = pack_result(iter(items), split=True)
    assert error is None and value is not None
    parts = split_parts(value)
    assert parts is not None and [unpack_value(part) for part in parts] == items
    assert unpack_value(value) == items == unpack_value(join_parts(parts))
    assert split_parts(pack_value(items)) is None
    call = split_result(with_inputs(pack_call((1,), {}), [value], as_list=False))
    assert wants_parts(call)[1] and unpack_call(call) == ((items, 1), {})
    with pytest.raises(ValueError, match="lengths do not add up"):
        split_parts(value + b"x")


def test_a_result_that_is_no_list_before_a_map_fails_the_step_clearly() -> None:
    from fastworker.calls import pack_result
    value, error, retry = pack_result(42, split=True)
    assert value is None and error is not None and not retry
    assert error.message == ("a step before a .map() must return a list (or any iterable) "
                             "of items, not int")


def test_results_in_parts_and_marked_calls_are_shown_as_the_worker_reads_them() -> None:
    from fastworker.peek import peek_call, peek_value
    parts = join_parts([pack_value(1), pack_value("two")])
    assert peek_value(parts) == "[1, 'two']"
    assert peek_call(split_result(pack_call((5,), {}))) == ("(5,)", "{}")
    assert peek_call(with_inputs(pack_call((), {}), [parts], as_list=False)) == (
        "([1, 'two'],)", "{}")


def test_a_generator_that_fails_as_it_is_read_before_a_map_fails_the_step() -> None:
    """Its error is the task's, never an exception out of the call (which
    would end a worker thread or the executor)."""
    import trio

    from fastworker.calls import call_async, call_sync
    from fastworker.tasks import Task

    def items() -> object:
        yield 1
        raise KeyError("gone")

    async def async_items() -> object:
        return items()

    marked = split_result(pack_call((), {}))
    for found, run in ((Task(name="t", fn=items), call_sync),
                       (Task(name="t", fn=async_items), None)):
        called = run(found, marked) if run else trio.run(call_async, found, marked)
        value, error, retry = called
        assert value is None and error is not None and not retry
        assert (error.type, error.message) == ("KeyError", "'gone'")
