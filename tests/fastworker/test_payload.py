"""Payloads: arguments and results as bytes, and their limits."""

from __future__ import annotations

import pytest

from fastworker import InvalidSubmission
from fastworker.payload import pack_call, pack_value, unpack_call, unpack_value


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
