"""An executor's options: how much it runs at once, of which kind of slot,
how much it takes beyond its free slots, and how it names itself (the
``[actors.executor]`` table of a node's config; see docs/configuration.md).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from fastworker.limits import MAX_PREFETCH

__all__ = ["ExecutorOptions"]


def _positive_or_none(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(
            f"{attribute.name} must be a positive number of seconds or unset, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ExecutorOptions:
    """How much an executor runs at once, and how it names itself."""

    #: Async jobs running at once: its lanes, the slots of kind "async".
    concurrency: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    #: Long-lived worker threads that run sync tasks: the slots of kind "thread".
    threads: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    #: The name in records and credit; empty means "<hostname>:<pid>".
    worker: str = ""
    #: The time limit of jobs whose submission and task set none (seconds).
    default_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Processes for ``isolation="process"`` tasks, started when first
    #: needed (0: one per CPU): the slots of kind "process".
    processes: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Where sync tasks that do not choose (``@task(isolation=...)``) run.
    isolation: Literal["thread", "process"] = "thread"
    #: A job whose pool process died running it this many times (counted
    #: across its attempts) is poison: it fails as ``PoisonTask`` instead of
    #: being retried. A death before that is a ``WorkerProcessDied`` error,
    #: retried like any error while the job has retries left.
    poison_after: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    #: The most jobs per kind of slot it takes beyond its free slots, to
    #: start the moment one frees (they hide the round trip to the
    #: Dispatcher). They wait here, best first. How many it takes follows
    #: the kind's start rate (``executor/prefetch.py``): about two round
    #: trips' worth, at least ``min_prefetch``, at most this; 0 takes only
    #: what can start at once.
    prefetch: int = attrs.field(default=128, validator=[
        attrs.validators.ge(0), attrs.validators.le(MAX_PREFETCH)])
    #: The least prefetch per kind (at most ``prefetch``): the same as
    #: ``prefetch`` keeps it there, whatever the start rate.
    min_prefetch: int = attrs.field(default=1, validator=[
        attrs.validators.ge(0), attrs.validators.le(MAX_PREFETCH)])
