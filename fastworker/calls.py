"""Calling a task function and turning what happens into an ``Outcome``'s
parts: the pickled value, or a ``RemoteError`` (the exception as text).

Shared by the executor's threads and async tasks and by the processes of
its pool (``fastworker.executor.pool``).
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from fastworker.messages import RemoteError
from fastworker.payload import pack_parts, pack_value, unpack_call, wants_parts
from fastworker.tasks import Task

#: What a call gives: the pickled value, or the error and whether the
#: task's ``retry_on`` makes it worth a retry.
Called = tuple[bytes | None, RemoteError | None, bool]


def call_sync(found: Task[Any, Any], payload: bytes) -> Called:
    """Run a sync task function on its pickled arguments."""
    payload, split = wants_parts(payload)
    try:
        args, kwargs = unpack_call(payload)
    except Exception as error:
        return None, invalid_payload(found, error), False
    try:
        result = found.fn(*args, **kwargs)
    except BaseException as error:  # noqa: BLE001 - even SystemExit must not kill the thread
        return None, remote_error(error), found.retries_on(error)
    return pack_result(result, split)


async def call_async(found: Task[Any, Any], payload: bytes) -> Called:
    """Run an async task function on its pickled arguments."""
    payload, split = wants_parts(payload)
    try:
        args, kwargs = unpack_call(payload)
    except Exception as error:
        return None, invalid_payload(found, error), False
    function: Callable[..., Awaitable[Any]] = found.fn
    try:
        result = await function(*args, **kwargs)
    except Exception as error:
        return None, remote_error(error), found.retries_on(error)
    return pack_result(result, split)


def pack_result(result: Any, split: bool = False) -> Called:
    """Pickle a task's return value (a value that cannot be is an error);
    ``split``: in parts, item by item (``payload.split_result``)."""
    try:
        return (pack_parts(result) if split else pack_value(result)), None, False
    except (TypeError, ValueError) as error:
        return None, RemoteError(type=type_name(error), message=str(error)), False
    except Exception as error:  # a lazy iterable's own code fails as it is read
        return None, remote_error(error), False


def remote_error(error: BaseException) -> RemoteError:
    """What a task raised, as text; the first frame (ours, the call) is left out."""
    tb = error.__traceback__
    text = "".join(traceback.format_exception(type(error), error, tb.tb_next if tb else None))
    return RemoteError(type=type_name(error), message=str(error), traceback=text)


def invalid_payload(found: Task[Any, Any], error: Exception) -> RemoteError:
    return RemoteError(
        type="InvalidSubmission",
        message=f"cannot unpickle the arguments of task {found.name}: "
        f"{type(error).__name__}: {error}",
        traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)),
    )


def timeout_error(found: Task[Any, Any], limit: float) -> RemoteError:
    return RemoteError(
        type="TaskTimeout",
        message=f"task {found.name} ran past its time limit of {limit:g} s",
        kind="timeout",
    )


#: What each way of stopping a task did, for its error's message.
_STOPPED = {
    "cancelled": "it was cancelled before it started",
    "interrupted": "it was cancelled while running (its async function was interrupted)",
    "terminated": "it was cancelled while running (its process was killed)",
    "abandoned": "it was cancelled while running in a thread, which cannot be stopped: "
    "the thread finishes the call and its result is discarded",
}


def cancelled_error(found: Task[Any, Any] | None, how: str, name: str = "") -> RemoteError:
    """The error of a task stopped by a cancel; ``how`` says what was done."""
    task = found.name if found is not None else name
    return RemoteError(type="TaskCancelled", kind="cancelled",
                       message=f"task {task}: {_STOPPED[how]}")


def type_name(error: BaseException) -> str:
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
