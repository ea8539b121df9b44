"""Building and checking a Submit: the one place for a submission's rules.

Every submission is built here, whoever makes it (the client, the
scheduler, the dashboard's retry), and checked here again where it enters
the control plane (the inbox), so a bad value is refused at once with
``InvalidSubmission`` rather than found by the actor that runs the task.
Priority names and levels, the time limit that applies, countdown / eta /
expires turned into relative seconds, and task ids all live here; the
limits on the sizes of ids, names and keys are ``fastworker.limits``'.
"""

from __future__ import annotations

import math
import secrets
import time
from datetime import datetime
from typing import Any

from fastworker.errors import InvalidSubmission
from fastworker.limits import (
    MAX_FAIR_KEY_LENGTH,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_RETRIES,
    MAX_TASK_NAME_LENGTH,
    check_text,
)
from fastworker.messages import PRIORITIES, Priority, Submit
from fastworker.payload import DEFAULT_MAX_PAYLOAD_BYTES, pack_call
from fastworker.tasks import Task, task_name

__all__ = [
    "TaskIds",
    "build_submit",
    "check_submit",
    "new_task_id",
    "priority_level",
    "priority_name",
    "time_limit",
]

#: Ids wrap around at 64 bits.
_ID_MASK = (1 << 64) - 1
#: The priority of a submission whose task names none.
DEFAULT_PRIORITY: Priority = "normal"


#: Priority name -> level, the fast way to ``priority_level``.
_LEVELS = {name: level for level, name in enumerate(PRIORITIES)}


def priority_level(priority: str) -> int:
    """The level (0 critical .. 3 low, also the submission port's offset) of
    a priority name.

    Raises:
        InvalidSubmission: not one of critical, high, normal, low.
    """
    try:
        return PRIORITIES.index(priority)
    except ValueError:
        raise InvalidSubmission(
            f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}") from None


def priority_name(level: int) -> str:
    """The name of a priority level (``2`` -> ``normal``); a level out of
    range is shown as its number."""
    return PRIORITIES[level] if 0 <= level < len(PRIORITIES) else str(level)


def time_limit(call: float | None, task: Task[Any, Any] | None,
               default: float | None = None) -> float | None:
    """The time limit that applies to a run: the call's, else the task's,
    else the executor's ``default`` (``None``: no limit)."""
    if call is not None:
        return call
    if task is not None and task.timeout is not None:
        return task.timeout
    return default


class TaskIds:
    """Task ids for one submitter: 16 hex digits, counting up from a random
    start, so they are unique across submitters (their runs of ids would have
    to overlap in a space of 2**64) and cheap to make (no randomness per id)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = secrets.randbits(64)

    def next(self) -> str:
        """A new id."""
        self._last = (self._last + 1) & _ID_MASK
        return f"{self._last:016x}"


_ids = TaskIds()


def new_task_id() -> str:
    """A new task id, for submitters without a ``TaskIds`` of their own."""
    return _ids.next()


def build_submit(
    task: str | Task[Any, Any],
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    id: str,
    priority: str | None = None,
    timeout: float | None = None,
    queue_wait: float = 0.0,
    countdown: float | None = None,
    eta: datetime | float | None = None,
    expires: datetime | float | None = None,
    retries: int | None = None,
    key: str | None = None,
    fair_key: str | None = None,
    retry_of: str = "",
    payload: bytes | None = None,
) -> Submit:
    """The Submit of one run of ``task``, with the task's defaults applied
    (priority, time limit) and every option checked.

    Args:
        payload: the pickled arguments, when they are already packed (a
            retry of a stored task); otherwise ``args`` and ``kwargs`` are.
        fair_key: the fairness key (``None``: the task's ``fair_key`` of
            ``args`` and ``kwargs``, if it has one and no ``payload`` is
            given; else none).

    Raises:
        InvalidSubmission: an option is out of range, with what was expected.
    """
    # This runs for every task a client submits: the plain call (no
    # schedule, key or retries) takes the short way, and nothing is checked
    # twice; ``benchmarks/throughput.py`` measures it.
    found = task if isinstance(task, Task) else None
    if priority is None:
        priority = found.priority if found is not None else DEFAULT_PRIORITY
    try:
        level = _LEVELS[priority]
    except (KeyError, TypeError):
        level = priority_level(priority)  # raises, naming the priorities
    name = task_name(task)
    if payload is None:
        if found is not None and found.fair_key is not None and fair_key is None:
            fair_key = _task_fair_key(found, args, kwargs)
        payload = pack_call(tuple(args), dict(kwargs) if kwargs else {})
    limit = timeout if found is None else time_limit(timeout, found)
    # Whole seconds travel as floats: an int too large for the wire would
    # fail the whole frame of submissions it is sent with.
    if type(queue_wait) is not float and _seconds(queue_wait, allow_zero=True):
        queue_wait = float(queue_wait)
    if limit is not None and type(limit) is not float and _seconds(limit):
        limit = float(limit)
    if countdown is None and eta is None and expires is None and key is None and (
            retries is None and fair_key is None):
        submit = Submit(id=id, task=name, payload=payload, priority=level, timeout=limit,
                        queue_wait=queue_wait, retry_of=retry_of)
    else:
        submit = Submit(
            id=id,
            task=name,
            payload=payload,
            priority=level,
            timeout=limit,
            queue_wait=queue_wait,
            retry_of=retry_of,
            delay=_delay(countdown, eta),
            expires_in=_expires_in(expires),
            key=_key(key),
            retries=None if retries is None else _retries(retries),
            fair_key=_fair_key(fair_key),
        )
    # Every field but queue_wait, the time limit and the sizes of the id,
    # the name and retry_of was checked as it was made; ``check_submit``
    # says what is wrong with those.
    if not (type(queue_wait) is float and 0.0 <= queue_wait < math.inf) and not _seconds(
            queue_wait, allow_zero=True) or (limit is not None and not _seconds(limit)) or not (
            type(id) is str and 0 < len(id) <= MAX_ID_LENGTH
            and len(name) <= MAX_TASK_NAME_LENGTH and len(retry_of) <= MAX_ID_LENGTH):
        problem = check_submit(submit)
        assert problem is not None
        raise InvalidSubmission(problem)
    return submit


def check_submit(submit: Submit) -> str | None:
    """What is wrong with a Submit's options, or ``None``: the check the
    inbox makes of every submission it receives."""
    if not (isinstance(submit.priority, int) and 0 <= submit.priority < len(PRIORITIES)):
        return f"priority {submit.priority!r} is out of range; expected 0 (critical) to 3 (low)"
    if not _seconds(submit.queue_wait, allow_zero=True):
        return f"queue_wait {submit.queue_wait!r} is not a number of seconds >= 0"
    if not _seconds(submit.delay, allow_zero=True):
        return f"delay {submit.delay!r} is not a number of seconds >= 0"
    if submit.timeout is not None and not _seconds(submit.timeout):
        return f"timeout {submit.timeout!r} is not a number of seconds > 0"
    if submit.expires_in is not None and not _seconds(submit.expires_in):
        return f"expires_in {submit.expires_in!r} is not a number of seconds > 0"
    retries = submit.retries
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or retries < 0):
        return f"retries {retries!r} is not a whole number >= 0"
    if retries is not None and retries > MAX_RETRIES:
        return f"retries is {retries}; the limit is {MAX_RETRIES}"
    # Sizes: the common case (all short) costs four len() calls.
    if not (type(submit.id) is str and 0 < len(submit.id) <= MAX_ID_LENGTH):
        return check_text("id", submit.id, MAX_ID_LENGTH, empty=False)
    if len(submit.task) > MAX_TASK_NAME_LENGTH:
        return check_text("task name", submit.task, MAX_TASK_NAME_LENGTH)
    if len(submit.key) > MAX_KEY_LENGTH:
        return check_text("key", submit.key, MAX_KEY_LENGTH)
    if len(submit.fair_key) > MAX_FAIR_KEY_LENGTH:
        return check_text("fair_key", submit.fair_key, MAX_FAIR_KEY_LENGTH)
    if len(submit.retry_of) > MAX_ID_LENGTH:
        return check_text("retry_of", submit.retry_of, MAX_ID_LENGTH)
    if len(submit.payload) > DEFAULT_MAX_PAYLOAD_BYTES:  # the client's own limit, again
        return (f"the arguments are {len(submit.payload)} bytes; the limit is "
                f"{DEFAULT_MAX_PAYLOAD_BYTES}")
    return None


def _seconds(value: Any, *, allow_zero: bool = False) -> bool:
    if type(value) is float:  # the common case first: every submission is checked
        return (0.0 <= value if allow_zero else 0.0 < value) and value < math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and (value >= 0 if allow_zero else value > 0)


def _seconds_until(when: datetime | float, name: str) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise InvalidSubmission(f"{name} must be an aware datetime (with a tzinfo)")
        return when.timestamp() - time.time()
    if isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when):
        return float(when) - time.time()
    raise InvalidSubmission(f"{name} must be a datetime or Unix seconds, got {when!r}")


def _delay(countdown: float | None, eta: datetime | float | None) -> float:
    """Seconds to hold a task, from ``countdown`` or ``eta``: relative, so
    the two machines' clocks need not agree."""
    if countdown is not None and eta is not None:
        raise InvalidSubmission("give countdown or eta, not both")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, (int, float)) or not (
                math.isfinite(countdown)):
            raise InvalidSubmission(f"countdown must be a number of seconds, got {countdown!r}")
        return max(float(countdown), 0.0)
    if eta is not None:
        return max(_seconds_until(eta, "eta"), 0.0)
    return 0.0


def _expires_in(expires: datetime | float | None) -> float | None:
    if expires is None:
        return None
    if isinstance(expires, datetime):
        left = _seconds_until(expires, "expires")
    elif isinstance(expires, (int, float)) and not isinstance(expires, bool) and (
            math.isfinite(expires)):
        left = float(expires)
    else:
        raise InvalidSubmission(f"expires must be seconds or a datetime, got {expires!r}")
    if left <= 0:
        raise InvalidSubmission(f"expires is already past ({left:.3f} s)")
    return left


def _retries(retries: int) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidSubmission(f"retries must be a whole number >= 0, got {retries!r}")
    if retries > MAX_RETRIES:
        raise InvalidSubmission(f"retries is {retries}; the limit is {MAX_RETRIES}")
    return retries


def _key(key: str | None) -> str:
    if key is None:
        return ""
    if not isinstance(key, str) or not key:
        raise InvalidSubmission(f"key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidSubmission(f"key is {len(key)} characters; the limit is {MAX_KEY_LENGTH}")
    return key


def _fair_key(fair_key: str | None) -> str:
    if fair_key is None:
        return ""
    if not isinstance(fair_key, str):
        raise InvalidSubmission(f"fair_key must be a string, got {fair_key!r}")
    if len(fair_key) > MAX_FAIR_KEY_LENGTH:
        raise InvalidSubmission(
            f"fair_key is {len(fair_key)} characters; the limit is {MAX_FAIR_KEY_LENGTH}")
    return fair_key


def _task_fair_key(found: Task[Any, Any], args: tuple[Any, ...] | list[Any],
                   kwargs: dict[str, Any] | None) -> str:
    """The fairness key a task's ``fair_key`` callable gives for these arguments."""
    assert found.fair_key is not None
    try:
        fair_key = found.fair_key(*args, **(kwargs or {}))
    except Exception as error:
        raise InvalidSubmission(
            f"the fair_key of task {found.name} raised {type(error).__name__}: {error}") from error
    if fair_key is None:
        return ""
    if not isinstance(fair_key, str):
        raise InvalidSubmission(
            f"the fair_key of task {found.name} must return a string, got {fair_key!r}")
    return fair_key
