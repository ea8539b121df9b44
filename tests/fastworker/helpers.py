"""Stand-ins shared by the task queue's actor tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors import Actor, ActorContext, NoOptions


class Recorder(Actor[Any]):
    """Stands in for any actor a test only needs to watch: keeps what it is
    sent, and answers calls with ``answer(message)`` if given."""

    def __init__(self, options: NoOptions, context: ActorContext, *, got: list[Any],
                 answer: Callable[[Any], Any] | None = None) -> None:
        super().__init__(options, context)
        self.got = got
        self.answer = answer

    async def handle(self, message: Any) -> Any:
        self.got.append(message)
        return None if self.answer is None else self.answer(message)
