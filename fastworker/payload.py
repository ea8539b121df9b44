"""Task arguments and results as bytes: the only cloudpickle caller.

Payloads are packed by the client (arguments) and the executor (results),
and unpacked only after their frame was authenticated, and only by the
executor (arguments) and the client (results): a forged pickle runs
arbitrary code, so nothing else ever unpickles.
"""

from __future__ import annotations

import pickle
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


def unpack_call(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpickle a call's arguments (executor side, after authentication)."""
    args, kwargs = cloudpickle.loads(data)
    return tuple(args), dict(kwargs)


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
    """Unpickle a task's return value (client side, after authentication)."""
    return cloudpickle.loads(data)
