"""Small actors and messages shared by the runtime's tests."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from actors import Actor, Codec


@attrs.frozen
class Note:
    """Anything -> Recorder: a value to remember."""

    value: int


@attrs.frozen
class Boom:
    """Anything -> Recorder: crash while handling this."""


@attrs.frozen
class Hold:
    """Anything -> Recorder: block until the event is set."""

    event: trio.Event = attrs.field(eq=False)


@attrs.frozen
class Blob:
    """Anything -> an edge: a payload of any size."""

    data: bytes


codec = Codec([Note, Blob], protocol=1)


@attrs.frozen(kw_only=True)
class RecorderOptions:
    label: str = "recorder"
    limit: int = 10


class Recorder(Actor[Any]):
    """Remembers notes in a list shared across restarts (passed as a param),
    answers calls with the note's value doubled, and forwards to ``out``."""

    Options = RecorderOptions
    refs_optional = ("out",)

    def __init__(self, options: Any, context: Any, *, seen: list[Any] | None = None,
                 batches: list[int] | None = None,
                 when: tuple[int, trio.Event] | None = None) -> None:
        super().__init__(options, context)
        self.seen = seen if seen is not None else []
        self.batches = batches if batches is not None else []
        self.when = when  # (count, event): the event is set once `count` notes were seen

    async def handle_batch(self, messages: list[Any]) -> None:
        self.batches.append(len(messages))
        await super().handle_batch(messages)

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Boom):
            raise RuntimeError("boom")
        if isinstance(message, Hold):
            await message.event.wait()
            self.seen.append("held")
            return None
        self.seen.append(message.value)
        if self.when is not None and len(self.seen) >= self.when[0]:
            self.when[1].set()
        if "out" in self.refs:
            await self.refs["out"].send(message)
        return message.value * 2
