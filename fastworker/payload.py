"""Task arguments and results as bytes: the only cloudpickle caller.

Payloads are packed by the client (arguments) and the executor (results),
and unpacked only after their frame was authenticated, and only by the
executor (arguments) and the client (results): a forged pickle runs
arbitrary code, so nothing else ever unpickles.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from fastworker.errors import InvalidSubmission

#: The largest payload (arguments or result) accepted, in bytes.
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024

#: Types that standard pickle writes by value, the same on every machine:
#: for these it is several times faster than cloudpickle. Anything else
#: (functions, classes, objects of ``__main__``) goes through cloudpickle,
#: which can send those by value.
_PLAIN = (int, float, str, bytes, bool, type(None))
_EMPTY_CALL = pickle.dumps(((), {}), protocol=pickle.HIGHEST_PROTOCOL)


def _plain(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return all(type(a) in _PLAIN for a in args) and all(
        type(v) in _PLAIN for v in kwargs.values()
    )


def pack_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], *, limit: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> bytes:
    """Pickle a call's arguments.

    Raises:
        InvalidSubmission: they cannot be pickled, or are over ``limit``.
    """
    try:
        if not args and not kwargs:
            data: bytes = _EMPTY_CALL
        elif _plain(args, kwargs):
            data = pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        else:
            data = cloudpickle.dumps((args, kwargs))
    except Exception as error:
        raise InvalidSubmission(
            f"cannot send the arguments: {type(error).__name__}: {error}"
        ) from None
    if len(data) > limit:
        raise InvalidSubmission(
            f"the arguments pickle to {len(data)} bytes, over the limit of {limit}"
        )
    return data


#: The start of a call with inputs (``with_inputs``): no pickle starts so
#: (protocol 2 and later begin with 0x80).
_INPUTS = b"FWIN\x01"
_INPUTS_HEAD = struct.Struct("<5sBI")
_LENGTH = struct.Struct("<I")


def with_inputs(call: bytes, inputs: Sequence[bytes], *, as_list: bool,
                limit: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """A call whose first positional argument comes from ``inputs``, the
    pickled values of other tasks (a workflow step's parents' results):
    the one input itself, or with ``as_list`` a list of them all, in order.
    The bytes are only put together here; the executor unpickles them
    (``unpack_call``), as it does any call.

    Raises:
        ValueError: not exactly one input without ``as_list``, or over ``limit``.
    """
    if not as_list and len(inputs) != 1:
        raise ValueError(f"one input expected, got {len(inputs)}")
    parts = (call, *inputs)
    head = _INPUTS_HEAD.pack(_INPUTS, 1 if as_list else 0, len(inputs))
    data = b"".join((head, *(_LENGTH.pack(len(part)) for part in parts), *parts))
    if len(data) > limit:
        raise ValueError(f"the call with its inputs is {len(data)} bytes, over the limit of "
                         f"{limit}")
    return data


#: A call whose result is returned in parts (``split_result``), and a value
#: made of parts (``pack_parts``, ``join_parts``): neither starts as a pickle.
_SPLIT = b"FWSP\x01"
_PARTS = b"FWPT\x01"
_PARTS_HEAD = struct.Struct("<5sI")


def split_result(call: bytes) -> bytes:
    """``call``, marked so that its task's result (a list, or any iterable)
    comes back in parts: each item pickled on its own, which the control
    plane can hand out one by one without unpickling (a step before a
    workflow's ``.map()``)."""
    return _SPLIT + call


def wants_parts(data: bytes) -> tuple[bytes, bool]:
    """A call without its ``split_result`` mark, and whether it had one."""
    if data.startswith(_SPLIT):
        return data[len(_SPLIT):], True
    return data, False


def pack_parts(items: Any, *, limit: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """A task's result in parts (executor side; see ``split_result``).

    Raises:
        TypeError: it is not iterable, or an item cannot be pickled.
        ValueError: it is over ``limit`` bytes.
    """
    try:
        iterator = iter(items)
    except TypeError:
        raise TypeError(f"a step before a .map() must return a list (or any iterable) of "
                        f"items, not {type(items).__name__}") from None
    return join_parts([pack_value(item, limit=limit) for item in iterator], limit=limit)


def join_parts(parts: Sequence[bytes], *, limit: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Pickled values as one value made of parts: unpickled, a list of them
    (``unpack_value``). The bytes are only put together."""
    data = b"".join((_PARTS_HEAD.pack(_PARTS, len(parts)),
                     *(_LENGTH.pack(len(part)) for part in parts), *parts))
    if len(data) > limit:
        raise ValueError(f"the value's parts are {len(data)} bytes, over the limit of {limit}")
    return data


def split_parts(data: bytes) -> list[bytes] | None:
    """The parts of a value made of parts, unpickling nothing; ``None`` for
    a plain value.

    Raises:
        ValueError: its framing is broken.
    """
    if not data.startswith(_PARTS):
        return None
    if len(data) < _PARTS_HEAD.size:
        raise ValueError("a value in parts cut short")
    _, count = _PARTS_HEAD.unpack_from(data)
    return _framed(data, _PARTS_HEAD.size, count, "a value in parts")


def _framed(data: bytes, at: int, count: int, what: str) -> list[bytes]:
    """``count`` parts from ``at``: their lengths, then their bytes."""
    end = at + _LENGTH.size * count
    if end > len(data):
        raise ValueError(f"{what} whose framing is broken")
    lengths = [_LENGTH.unpack_from(data, at + _LENGTH.size * i)[0] for i in range(count)]
    if end + sum(lengths) != len(data):
        raise ValueError(f"{what} whose lengths do not add up")
    parts = []
    for length in lengths:
        parts.append(data[end:end + length])
        end += length
    return parts


def split_inputs(data: bytes) -> tuple[bytes, list[bytes], bool] | None:
    """A call with inputs as its parts, unpickling nothing: the call's own
    pickle, the inputs' pickles, and whether they go as a list; ``None``
    for a plain call.

    Raises:
        ValueError: a call with inputs whose framing is broken.
    """
    data, _ = wants_parts(data)
    if not data.startswith(_INPUTS):
        return None
    if len(data) < _INPUTS_HEAD.size:
        raise ValueError("a call with inputs cut short")
    _, as_list, count = _INPUTS_HEAD.unpack_from(data)
    if as_list not in (0, 1) or (not as_list and count != 1):
        raise ValueError("a call with inputs whose framing is broken")
    parts = _framed(data, _INPUTS_HEAD.size, count + 1, "a call with inputs")
    return parts[0], parts[1:], bool(as_list)


def unpack_call(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpickle a call's arguments (executor side, after authentication),
    with its inputs first if it has some (``with_inputs``).

    Raises:
        ValueError: a call with inputs whose framing is broken.
    """
    parts = split_inputs(data)
    if parts is None:
        args, kwargs = cloudpickle.loads(wants_parts(data)[0])
        return tuple(args), dict(kwargs)
    call, inputs, as_list = parts
    args, kwargs = cloudpickle.loads(call)
    values = [unpack_value(part) for part in inputs]
    first = values if as_list else values[0]
    return (first, *args), dict(kwargs)


def pack_value(value: Any, *, limit: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Pickle a task's return value.

    Raises:
        TypeError: it cannot be pickled.
        ValueError: it is over ``limit`` bytes.
    """
    try:
        if type(value) in _PLAIN:
            data: bytes = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            data = cloudpickle.dumps(value)
    except Exception as error:
        raise TypeError(
            f"the task's return value cannot be pickled: {type(error).__name__}: {error}"
        ) from None
    if len(data) > limit:
        raise ValueError(f"the task's return value pickles to {len(data)} bytes, over the limit of {limit}")
    return data


def unpack_value(data: bytes) -> Any:
    """Unpickle a task's return value (client side, after authentication);
    a value made of parts is the list of them."""
    parts = split_parts(data)
    if parts is not None:
        return [cloudpickle.loads(part) for part in parts]
    return cloudpickle.loads(data)
