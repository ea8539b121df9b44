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

import datetime
import difflib
import inspect
import random
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

import attrs
from croniter import croniter

from fastworker.errors import TaskTimeout
from fastworker.messages import ASYNC, PRIORITIES, PROCESS, THREAD, Priority, StartWorkflow
from fastworker.workflows.canvas import Signature

P = ParamSpec("P")
R = TypeVar("R")

#: Option names ``@task`` accepts, for the error that lists them.
TASK_OPTIONS = (
    "name", "priority", "timeout", "at_most_once", "retries", "backoff", "retry_on",
    "isolation", "cron", "every", "fair_key",
)

Isolation = Literal["thread", "process"]


@attrs.frozen(kw_only=True)
class Backoff:
    """How long to wait before each retry of a failed task.

    The wait before retry ``n`` (1 for the first) is ``base * factor ** (n -
    1)`` seconds, at most ``max``; with ``jitter`` it is then drawn at
    random between half of that and all of it, so tasks that failed
    together do not all come back together.
    """

    base: float = attrs.field(default=1.0)
    factor: float = attrs.field(default=2.0)
    max: float = attrs.field(default=300.0)
    jitter: bool = True

    def __attrs_post_init__(self) -> None:
        if not (isinstance(self.base, (int, float)) and self.base >= 0):
            raise TypeError(f"backoff base must be seconds >= 0, got {self.base!r}")
        if not (isinstance(self.factor, (int, float)) and self.factor >= 1):
            raise TypeError(f"backoff factor must be a number >= 1, got {self.factor!r}")
        if not (isinstance(self.max, (int, float)) and self.max >= self.base):
            raise TypeError(f"backoff max must be seconds >= base, got {self.max!r}")

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        exponent = min(max(retry - 1, 0), 64)  # past 2**64 every wait is ``max`` anyway
        wait = min(self.max, self.base * self.factor ** exponent)
        if self.jitter:
            wait *= 0.5 + 0.5 * rng()
        return wait


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
        retries: how many times a failed attempt is tried again.
        backoff: the wait before each retry.
        retry_on: the exception classes worth a retry (``None``: any
            ``Exception``, time limits included).
        isolation: where a sync function runs: ``thread`` (a worker
            thread, which cannot be stopped) or ``process`` (a process of
            the executor's pool, killed at its time limit or on cancel);
            ``None``: as the executor's ``isolation`` option says.
        cron: a cron expression (five fields, the control plane's local
            time) to run it by, with no arguments.
        every: run it every so many seconds, with no arguments.
        fair_key: called with a submission's arguments, gives its fairness
            key (``None``: none); a call's ``fair_key=`` overrides it.
        workflow: for a periodic workflow (``fastworker.workflows.periodic``),
            the workflow each run starts (its id is the run's); ``None``:
            a task.
    """

    name: str
    fn: Callable[P, R]
    priority: Priority = "normal"
    timeout: float | None = None
    at_most_once: bool = False
    retries: int = 0
    backoff: Backoff = Backoff()
    retry_on: tuple[type[BaseException], ...] | None = None
    isolation: Isolation | None = None
    cron: str | None = None
    every: float | None = None
    fair_key: Callable[..., str | None] | None = None
    workflow: StartWorkflow | None = None

    @property
    def periodic(self) -> bool:
        """Whether the control plane runs it on a schedule."""
        return self.cron is not None or self.every is not None

    def retries_on(self, error: BaseException) -> bool:
        """Whether ``error`` (an attempt's exception) is worth a retry."""
        if self.retry_on is None:
            return isinstance(error, Exception)
        return isinstance(error, self.retry_on)

    @property
    def retries_on_timeout(self) -> bool:
        """Whether running past the time limit is worth a retry."""
        return self.retry_on is None or issubclass(TaskTimeout, self.retry_on)

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (run in the executor's nursery)."""
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A step of a workflow running this task with these arguments,
        after the results of the steps before it as its first argument
        (``fastworker.workflows``)."""
        return Signature(self.name, args, kwargs, priority=self.priority,
                         timeout=self.timeout)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """A step that does not take the results of the steps before it."""
        return Signature(self.name, args, kwargs, immutable=True, priority=self.priority,
                         timeout=self.timeout)

    def map(self, *args: Any, **kwargs: Any) -> Signature:
        """A step that runs this task once per item of the list the step
        before it returns (each item first, then these arguments); what
        follows gets their results as one list, in order."""
        return Signature(self.name, args, kwargs, each=True, priority=self.priority,
                         timeout=self.timeout)


class TaskRegistry:
    """Tasks by name, for one process."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}
        #: Counts the changes: whoever keeps a copy of the names or kinds
        #: knows to take them again.
        self.version = 0

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
        self.version += 1

    def get(self, name: str) -> Task[Any, Any] | None:
        """The task of that name, or ``None``."""
        return self._tasks.get(name)

    def names(self) -> frozenset[str]:
        """Every registered name."""
        return frozenset(self._tasks)

    def kinds(self, isolation: Isolation) -> dict[str, int]:
        """Every registered name and the kind of slot it needs (``task_kind``)."""
        return {name: task_kind(task, isolation) for name, task in self._tasks.items()}

    def close_matches(self, name: str) -> list[str]:
        """Registered names that look like ``name`` (for error messages)."""
        return difflib.get_close_matches(name, list(self._tasks), n=3)

    def unregister(self, name: str) -> None:
        """Remove a task (tests)."""
        self._tasks.pop(name, None)
        self.version += 1


def task_kind(task: Task[Any, Any], isolation: Isolation) -> int:
    """The kind of slot (``KINDS`` index) a job of ``task`` needs on an
    executor whose sync tasks run by default as ``isolation`` says."""
    if task.is_async:
        return ASYNC
    return PROCESS if (task.isolation or isolation) == "process" else THREAD


#: This process's tasks.
registry = TaskRegistry()


def default_registry() -> TaskRegistry:
    """This process's task registry, where ``@task`` registers; looked up
    when called (so a test may put another in ``fastworker.tasks.registry``).
    Actors that take a registry use this one when given none."""
    return registry


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
    retries: int = 0,
    backoff: Backoff | float = Backoff(),
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    isolation: Isolation | None = None,
    cron: str | None = None,
    every: float | datetime.timedelta | None = None,
    fair_key: Callable[..., str | None] | None = None,
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
    retries: int = 0,
    backoff: Backoff | float = Backoff(),
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    isolation: Isolation | None = None,
    cron: str | None = None,
    every: float | datetime.timedelta | None = None,
    fair_key: Callable[..., str | None] | None = None,
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
        retries: try a failed attempt again up to this many times (each a
            new attempt of the same task id); a per-call ``retries=``
            overrides it.
        backoff: the wait before each retry: a ``Backoff``, or a number of
            seconds for ``Backoff(base=that)``.
        retry_on: an exception class, or a tuple of them, worth a retry;
            others fail the task at once. By default any ``Exception`` is,
            and so is running past the time limit.
        isolation: ``"process"`` runs a sync function in a process of the
            executor's pool, so its time limit and a cancel really stop it;
            ``"thread"`` on a worker thread; by default, as the executor's
            ``isolation`` option says (``thread`` unless configured).
        cron: run it on this schedule (``"*/5 * * * *"``), with no arguments.
        every: run it every so many seconds (or a ``timedelta``).
        fair_key: a function of the task's arguments giving a submission's
            fairness key (``fair_key=lambda tenant, *rest: tenant``): within
            a priority level, keys take turns, so one key's flood does not
            hold up the others' tasks; it returns a string, or ``None`` for
            none. A call's ``fair_key=`` overrides it.

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
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise TypeError(f"task retries must be a whole number >= 0, got {retries!r}")
    if isinstance(backoff, (int, float)) and not isinstance(backoff, bool):
        backoff = Backoff(base=float(backoff), max=max(300.0, float(backoff)))
    if not isinstance(backoff, Backoff):
        raise TypeError(f"task backoff must be a Backoff or seconds, got {backoff!r}")
    retry_types = _exception_types(retry_on)
    if isolation not in (None, "thread", "process"):
        raise TypeError(f"task isolation must be 'thread' or 'process', got {isolation!r}")
    if cron is not None and every is not None:
        raise TypeError("a task takes cron= or every=, not both")
    if cron is not None and not (isinstance(cron, str) and croniter.is_valid(cron)):
        raise TypeError(f"task cron must be a cron expression like '*/5 * * * *', got {cron!r}")
    if isinstance(every, datetime.timedelta):
        every = every.total_seconds()
    if every is not None and not (
        isinstance(every, (int, float)) and not isinstance(every, bool) and every > 0
    ):
        raise TypeError(f"task every must be a positive number of seconds, got {every!r}")
    if fair_key is not None and not callable(fair_key):
        raise TypeError(
            f"task fair_key must be a function of the task's arguments, got {fair_key!r}")

    def register(function: Callable[P, R]) -> Task[P, R]:
        if not callable(function):
            raise TypeError(f"@task decorates a function, got {function!r}")
        if isolation == "process" and inspect.iscoroutinefunction(function):
            raise TypeError(
                f"isolation='process' is for sync functions; {_origin(function)} is async "
                "(a cancel or time limit already stops it)"
            )
        made: Task[P, R] = Task(
            name=name or _origin(function),
            fn=function,
            priority=priority,
            timeout=None if timeout is None else float(timeout),
            at_most_once=bool(at_most_once),
            retries=retries,
            backoff=backoff,
            retry_on=retry_types,
            isolation=isolation,
            cron=cron,
            every=None if every is None else float(every),
            fair_key=fair_key,
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


def _exception_types(
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None,
) -> tuple[type[BaseException], ...] | None:
    if retry_on is None:
        return None
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise TypeError(
            f"task retry_on must be an exception class or a tuple of them, got {retry_on!r}"
        )
    return types


def _origin(function: Callable[..., Any] | Callable[..., Awaitable[Any]]) -> str:
    return f"{function.__module__}.{function.__qualname__}"
