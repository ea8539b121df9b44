"""The Journal actor: the one owner of a control plane's journal file
(``fastworker.journal`` is the file and its writer; this is the actor).

The inbox, the result store and the scheduler send it ``JournalWrite``s
(applied in the order they arrive, many per transaction; a called one is
answered once committed, a sent one may wait ``lazy_interval`` to share
the next called one's transaction) and ask it, at their start, what to
``Recover``. It never decides anything about tasks:
what to write and what a recovered row means is the sender's business.
With ``path`` empty or ``off`` it keeps nothing and answers at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, TypeAlias, Union

import attrs
import trio

from actors import Actor, ActorContext
from fastworker.internal import JournalWrite, Recover
from fastworker.journal.commit import Storage
from fastworker.journal.file import JournalFile, Recovered
from fastworker.journal.writer import (
    DEFAULT_MAX_BATCH_OPS,
    DEFAULT_MAX_PENDING_OPS,
    JournalStats,
    JournalWriter,
)

__all__ = ["Journal", "JournalOptions"]

log = logging.getLogger("fastworker.journal")

Accepts: TypeAlias = Union[JournalWrite, Recover]

#: The ``path`` that turns the journal off.
OFF = "off"
#: Seconds a sent write may wait to share a called write's transaction: a
#: task's dispatched state and result go with the next submission's commit
#: instead of two commits of their own, which a submission waiting for its
#: commit would otherwise queue behind (issue 14).
DEFAULT_LAZY_INTERVAL = 0.002


@attrs.frozen(kw_only=True)
class JournalOptions:
    """The journal's options.

    Attributes:
        path: the journal file, relative to the working directory; empty or
            ``off``: no journal (everything stays in memory).
        synchronous: ``normal`` (survives a crash of the process) or
            ``full`` (survives a crash of the machine, slower).
        max_batch_ops: operations in one transaction at most.
        max_pending_ops: operations not yet committed before writers wait.
        commit_interval: seconds a transaction stays open for more writes
            (0: commit as soon as the previous commit is done).
        lazy_interval: seconds a write sent without a call (nobody waits
            for it: dispatched states, results, drops) may wait for a
            called one, to go in its transaction (0: commit it as soon as
            the previous commit is done). A crash may lose the sent writes
            of this last moment, as it may lose those of a commit under way.
    """

    path: str = ""
    synchronous: Literal["normal", "full"] = "normal"
    max_batch_ops: int = attrs.field(default=DEFAULT_MAX_BATCH_OPS,
                                     validator=attrs.validators.ge(1))
    max_pending_ops: int = attrs.field(default=DEFAULT_MAX_PENDING_OPS,
                                       validator=attrs.validators.ge(1))
    commit_interval: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    lazy_interval: float = attrs.field(default=DEFAULT_LAZY_INTERVAL,
                                       validator=attrs.validators.ge(0))

    @property
    def enabled(self) -> bool:
        return self.path not in ("", OFF)


class Journal(Actor[Accepts]):
    """Owns the journal file: applies writes, answers recoveries."""

    Options = JournalOptions
    batch_max = 1024

    def __init__(self, options: JournalOptions, context: ActorContext, *,
                 wrap: Callable[[JournalFile], Storage] | None = None) -> None:
        """``wrap`` wraps the opened file (fault injection in tests)."""
        super().__init__(options, context)
        self._wrap = wrap
        self._writer: JournalWriter | None = None
        self._recovered: Recovered | None = None

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        options = self.options
        if not options.enabled:
            await super().run(task_status=task_status)
            return
        async with JournalWriter.open(
            options.path, synchronous=options.synchronous,
            max_batch_ops=options.max_batch_ops, max_pending_ops=options.max_pending_ops,
            commit_interval=options.commit_interval, lazy_interval=options.lazy_interval,
            wrap=self._wrap,
        ) as writer:
            self._writer = writer
            try:
                await super().run(task_status=task_status)
            finally:
                self._writer = None

    async def setup(self, nursery: trio.Nursery) -> str | None:
        if self._writer is None:
            return "off: nothing is kept across a restart"
        self._recovered = await self._writer.load()
        return f"{self.options.path}: recovered {self._recovered.summary()}"

    async def handle(self, message: Accepts) -> Any:
        match message:
            case Recover():
                # Each asker gets it once per start of the journal; a restarted
                # actor asks again and gets what is in the file now.
                if self._writer is None:
                    return Recovered()
                if self._recovered is not None:
                    recovered, self._recovered = self._recovered, None
                    return recovered
                return await self._writer.load()
            case JournalWrite(ops=ops):
                if self._writer is None:
                    return True
                commit = await self._writer.write(ops)
                reply = self.defer()

                def answer(error: Exception | None) -> None:
                    # From the writer's hand-back: JournalUnavailable, or a bad op: the caller's.
                    if error is None:
                        reply.set(True)
                    else:
                        reply.fail(error)

                commit.add_done_callback(answer)
                return None

    async def handle_batch(self, messages: list[Accepts]) -> None:
        # Sent writes (nobody waits) go in one lazy write, which may wait for
        # the next called one; order is kept because the writer applies
        # writes in the order they are made.
        ops: list[Any] = []
        for message in messages:
            if isinstance(message, JournalWrite):
                ops.extend(message.ops)
            else:
                log.warning("%s: ignored %s sent without a call", self.name,
                            type(message).__name__)
        if ops and self._writer is not None:
            await self._writer.write(ops, lazy=True)

    def stats_detail(self) -> JournalStats | None:
        return None if self._writer is None else self._writer.stats()
