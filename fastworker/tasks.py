"""``@task``: naming a function so another process can run it.

A decorated function is registered in this process's ``registry`` under a
name (``module.qualname`` by default), with its defaults for priority and
time limit. The control plane imports the modules named in its topology
(``[node] imports``, or ``FASTWORKER_TASKS``), which fills the registry:
its inbox accepts only names found there, and its executor runs them.

Calling a task object runs the function here, as if undecorated::

    @task
    def add(x: int, y: int) -> int:
        return x + y

    add(1, 2)                            # 3, locally
    await client.delay(add, 1, 2)        # queued on the control plane
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

import attrs

from fastworker.messages import PRIORITIES, Priority

P = ParamSpec("P")
R = TypeVar("R")

#: Option names ``@task`` accepts, for the error that lists them.
TASK_OPTIONS = ("name", "priority", "timeout", "at_most_once")


@attrs.frozen(eq=False)
class Task(Generic[P, R]):
    """A registered task: the function plus its name and defaults.

    Attributes:
        name: what clients submit it as.
        fn: the function (sync or async).
        priority: the default priority of a submission.
        timeout: the default time limit in seconds (``None``: none).
        at_most_once: never run twice: if the worker running it is lost,
            the task fails with ``WorkerLost`` instead of being redelivered.
    """

    name: str
    fn: Callable[P, R]
    priority: Priority = "normal"
    timeout: float | None = None
    at_most_once: bool = False

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (run in the executor's nursery)."""
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)


class TaskRegistry:
    """Tasks by name, for one process."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}

    def register(self, task: Task[Any, Any]) -> None:
        """Add a task.

        Raises:
            ValueError: another function already has that name.
        """
        existing = self._tasks.get(task.name)
        if existing is not None and _origin(existing.fn) != _origin(task.fn):
            raise ValueError(
                f"task name {task.name!r} is already taken by {_origin(existing.fn)}; "
                f"give {_origin(task.fn)} another with @task(name=...)"
            )
        self._tasks[task.name] = task

    def get(self, name: str) -> Task[Any, Any] | None:
        """The task of that name, or ``None``."""
        return self._tasks.get(name)

    def names(self) -> frozenset[str]:
        """Every registered name."""
        return frozenset(self._tasks)

    def close_matches(self, name: str) -> list[str]:
        """Registered names that look like ``name`` (for error messages)."""
        return difflib.get_close_matches(name, list(self._tasks), n=3)

    def unregister(self, name: str) -> None:
        """Remove a task (tests)."""
        self._tasks.pop(name, None)


#: This process's tasks.
registry = TaskRegistry()


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    priority: Priority = "normal",
    timeout: float | None = None,
    at_most_once: bool = False,
    **unknown: Any,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    priority: Priority = "normal",
    timeout: float | None = None,
    at_most_once: bool = False,
    **unknown: Any,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a sync or async function as a task.

    Use bare (``@task``) or with options (``@task(name="emails.send",
    priority="high", timeout=30)``).

    Args:
        name: the name clients submit it as; ``module.qualname`` by default.
        priority: default priority: critical, high, normal or low.
        timeout: default time limit in seconds.
        at_most_once: if its worker is lost while running it, fail it with
            ``WorkerLost`` rather than run it again (the default redelivers
            it: at-least-once).

    Raises:
        TypeError: an unknown option, or a bad value for one.
    """
    if unknown:
        names = ", ".join(repr(key) for key in sorted(unknown))
        hints = [
            f"did you mean {match[0]!r}?"
            for key in sorted(unknown)
            if (match := difflib.get_close_matches(key, TASK_OPTIONS, n=1))
        ]
        raise TypeError(
            f"unknown task option {names}; {' '.join(hints) + ' ' if hints else ''}"
            f"known options: {', '.join(TASK_OPTIONS)}"
        )
    if priority not in PRIORITIES:
        raise TypeError(f"task priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise TypeError(f"task timeout must be a positive number of seconds, got {timeout!r}")

    def register(function: Callable[P, R]) -> Task[P, R]:
        if not callable(function):
            raise TypeError(f"@task decorates a function, got {function!r}")
        made: Task[P, R] = Task(
            name=name or _origin(function),
            fn=function,
            priority=priority,
            timeout=None if timeout is None else float(timeout),
            at_most_once=bool(at_most_once),
        )
        registry.register(made)
        return made

    if fn is not None:
        return register(fn)
    return register


def task_name(task_or_name: str | Task[Any, Any] | Callable[..., Any]) -> str:
    """The name a client submits: a name as given, a task's name, or the
    default name of a plain function."""
    if isinstance(task_or_name, str):
        return task_or_name
    if isinstance(task_or_name, Task):
        return task_or_name.name
    return _origin(task_or_name)


def _origin(function: Callable[..., Any] | Callable[..., Awaitable[Any]]) -> str:
    return f"{function.__module__}.{function.__qualname__}"
