"""The actor base class.

An actor is a trio task that owns its state and an inbox, and handles typed
messages. Subclasses override ``handle`` (one message at a time) or
``handle_batch`` (a whole drained batch, for actors that gain from seeing
many messages at once, like an edge packing one frame), and optionally
``setup`` (bind a socket, start background tasks; runs before the actor
reports itself ready) and ``drain`` (finish in-flight work on a graceful
stop).

Two messages are understood by every actor: ``GetStats``, answered with an
``ActorStats`` record, and the runtime's private stop request. A message
sent with ``Ref.call`` is answered with whatever ``handle`` returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import attrs
import trio

from actors.errors import ActorCrashed
from actors.mailbox import Call, Inbox, MailboxStats, Ref, Reply

M = TypeVar("M")


@attrs.frozen
class GetStats:
    """Asks any actor for its ``ActorStats`` (send it with ``Ref.call``)."""


@attrs.frozen
class NoOptions:
    """The options of an actor that takes none."""


@attrs.frozen(kw_only=True)
class ActorStats:
    """One actor's snapshot: its mailbox, what it handled, how often it
    was restarted, and its own fields in ``detail`` (or ``None``)."""

    name: str
    kind: str
    mailbox: MailboxStats
    handled_total: int
    batches_total: int
    restarts: int
    detail: Any = None


class _Stop:
    """The runtime's request to stop after what is already queued."""

    __slots__ = ()


STOP = _Stop()


@attrs.define(kw_only=True)
class ActorContext:
    """What the runtime gives an actor, and keeps across its restarts.

    ``refs`` are the actor's wired refs by name; the counters survive a
    restart so snapshots show the actor's whole life, and ``pending`` holds
    what a crashed instance had taken from the inbox but not handled.
    """

    name: str
    kind: str
    inbox: Inbox[Any]
    refs: Mapping[str, Ref[Any]] = attrs.field(factory=dict)
    restarts: int = 0
    pending: list[Any] = attrs.field(factory=list)
    #: The name of the node it runs in, and every actor's ref there by name
    #: (itself included): for observers such as a dashboard, which ask the
    #: others for ``GetStats`` without being wired to each one.
    node: str = ""
    peers: Mapping[str, Ref[Any]] = attrs.field(factory=dict)
    handled_total: int = 0
    batches_total: int = 0


class Actor(Generic[M]):
    """Base class of every actor.

    Class attributes a subclass sets:
        Options: the attrs class its options are structured into
            (``NoOptions`` by default).
        refs_required / refs_optional: names of the refs it must / may be
            wired with; ``refs_open`` accepts any other name too (routing
            tables keyed by message type).
        batch_max: the most messages taken from the inbox at once.
        batch_settle: yield once before draining, so that senders that are
            ready add to the batch (for actors whose cost is per batch).
    """

    Options: ClassVar[type] = NoOptions
    refs_required: ClassVar[tuple[str, ...]] = ()
    refs_optional: ClassVar[tuple[str, ...]] = ()
    refs_open: ClassVar[bool] = False
    batch_max: ClassVar[int] = 256
    batch_settle: ClassVar[bool] = False

    def __init__(self, options: Any, context: ActorContext) -> None:
        self.options = options
        self.context = context
        self._reply: Reply | None = None
        self._deferred = False
        # Runs of calls go to handle_calls only if this actor overrides it.
        self._runs_of_calls = type(self).handle_calls is not Actor.handle_calls

    @property
    def name(self) -> str:
        """The actor's name in its topology."""
        return self.context.name

    @property
    def refs(self) -> Mapping[str, Ref[Any]]:
        """The refs it was wired with, by name."""
        return self.context.refs

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Set up, report ready, then handle batches until asked to stop.

        ``task_status.started`` receives what ``setup`` returned (for a
        listener, what it listens on), so "started" means ready.
        """
        async with trio.open_nursery() as nursery:
            ready = await self.setup(nursery)
            task_status.started(ready)
            await self._serve()
            await self.drain()
            nursery.cancel_scope.cancel()

    async def setup(self, nursery: trio.Nursery) -> str | None:
        """Prepare before taking messages; start background tasks in
        ``nursery`` (they are cancelled when the actor stops).

        Returns:
            A short description for the start-up log line (what it listens
            on), or ``None``.
        """
        return None

    async def drain(self) -> None:
        """On a graceful stop, finish in-flight work. The default has none."""

    async def serve_until(self, done: Callable[[], bool]) -> None:
        """From ``drain``: go on handling messages as before until ``done()``
        is true (checked after each handled batch, and first). For an actor
        that must hear from actors stopped after it (those it sends to stop
        later) while it finishes, e.g. results of the work it handed out.
        A second stop request met meanwhile is ignored. What came behind the
        stop request in its batch is served first, in order."""
        context = self.context
        while not done():
            if context.pending:
                batch, context.pending = context.pending, []
            else:
                batch = await context.inbox.receive_batch(self.batch_max,
                                                          settle=self.batch_settle)
                context.batches_total += 1
                context.handled_total += len(batch)
            await self._handle_items([item for item in batch if not isinstance(item, _Stop)])

    def stopping(self) -> None:
        """A graceful stop of the node began: called on every running actor
        at once, before any of them is stopped (they stop one by one, in
        reverse start order, each after ``drain``). Refuse new work here
        (say so to whoever sends it) while the others drain theirs; start
        tasks in the ``setup`` nursery if that takes I/O. The default does
        nothing."""

    async def handle(self, message: M) -> Any:
        """Handle one message; for a ``Ref.call``, the return value is the
        answer. An exception crashes the actor (its supervisor decides)."""
        raise NotImplementedError(f"{type(self).__name__} does not handle {message!r}")

    async def handle_batch(self, messages: list[M]) -> None:
        """Handle messages drained together, in order. Override to gain
        from seeing the batch at once; the default calls ``handle`` each."""
        for index, message in enumerate(messages):
            try:
                await self.handle(message)
            except BaseException:
                self.put_back(messages[index + 1 :])
                raise

    async def handle_calls(self, calls: list[Call[M]]) -> None:
        """Answer calls that came together (two or more in a row in one
        drained batch), in order: set or fail each one's ``reply`` (or keep
        it to set later). Override to gain from seeing them at once (one
        flush for all); only an actor that does gets them so. If it raises,
        every call of the run still unanswered fails with ``ActorCrashed``:
        a crash loses the run it happened on, never what came behind it."""
        for call in calls:
            await self._answer(call)

    def put_back(self, messages: list[M]) -> None:
        """From a ``handle_batch`` that is about to raise: hand back the
        messages of its run that it did not handle, so the next instance
        handles them first instead of losing them."""
        self.context.pending.extend(messages)

    def defer(self) -> Reply:
        """From ``handle`` of a message sent with ``Ref.call``: answer it
        later. Returns the call's reply slot (``set`` or ``fail`` it when the
        answer is known); ``handle``'s return value is then ignored. This is
        how an actor parks a request (a wait for room, for a result) without
        blocking its inbox.

        Raises:
            RuntimeError: the message being handled is not a call.
        """
        if self._reply is None:
            raise RuntimeError(f"{self.name}: defer() outside the handling of a call")
        self._deferred = True
        return self._reply

    def stats_detail(self) -> Any:
        """The actor's own fields for its snapshot; ``None`` by default."""
        return None

    def stats(self) -> ActorStats:
        """This actor's snapshot."""
        context = self.context
        return ActorStats(
            name=context.name,
            kind=context.kind,
            mailbox=context.inbox.stats(),
            handled_total=context.handled_total,
            batches_total=context.batches_total,
            restarts=context.restarts,
            detail=self.stats_detail(),
        )

    async def _serve(self) -> None:
        context = self.context
        inbox = context.inbox
        while True:
            if context.pending:
                # What a crashed instance had taken but not yet handled.
                batch, context.pending = context.pending, []
            else:
                batch = await inbox.receive_batch(self.batch_max, settle=self.batch_settle)
                context.batches_total += 1
                context.handled_total += len(batch)
            if await self._handle_items(batch):
                return

    async def _handle_items(self, batch: list[Any]) -> bool:
        """Hand a drained batch over in order; True once the stop request
        is reached. Runs of plain messages go to ``handle_batch`` together;
        calls and stats requests are answered one by one, in their place.

        If handling raises (or is cancelled), the items not yet handed over
        are kept in the context for the next instance: a crash loses the
        message it happened on (and, from a ``handle_batch`` that does not
        ``put_back``, the rest of that run), never the messages behind it.
        """
        start = 0  # the first item not yet handed over
        index, size = 0, len(batch)
        try:
            while index < size:
                item = batch[index]
                if not isinstance(item, (Call, _Stop, GetStats)):
                    index += 1
                    continue
                if start < index:
                    run, start = batch[start:index], index
                    await self.handle_batch(run)
                if isinstance(item, _Stop):
                    self.context.pending = batch[index + 1:]
                    return True
                end = index + 1
                if self._runs_of_calls and _answerable(item):
                    while end < size and _answerable(batch[end]):
                        end += 1
                start = end
                if end - index > 1:
                    await self._answer_run(batch[index:end])
                else:
                    await self._answer(item)
                index = end
            if start < size:
                run, start = batch[start:], size
                await self.handle_batch(run)
        except BaseException:
            # After anything the handler put back, which came earlier.
            self.context.pending.extend(batch[start:])
            raise
        return False

    async def _answer_run(self, calls: list[Call[Any]]) -> None:
        try:
            await self.handle_calls(calls)
        except Exception as error:
            for call in calls:
                if not call.reply.done:
                    crashed = ActorCrashed(
                        f"{self.name} crashed handling {len(calls)} calls: "
                        f"{type(error).__name__}: {error}")
                    crashed.__cause__ = error
                    call.reply.fail(crashed)
            raise

    async def _answer(self, item: Call[Any] | GetStats) -> None:
        if isinstance(item, GetStats):
            return  # a stats request nobody waits for
        message = item.message
        if isinstance(message, GetStats):
            item.reply.set(self.stats())
            return
        self._reply, self._deferred = item.reply, False
        try:
            answer = await self.handle(message)
        except Exception as error:
            crashed = ActorCrashed(
                f"{self.name} crashed handling {type(message).__name__}: "
                f"{type(error).__name__}: {error}"
            )
            crashed.__cause__ = error
            item.reply.fail(crashed)
            raise
        finally:
            self._reply = None
        if not self._deferred:
            item.reply.set(answer)


def _answerable(item: Any) -> bool:
    """A call to answer in a run (a stats request is answered on its own)."""
    return isinstance(item, Call) and not isinstance(item.message, GetStats)
