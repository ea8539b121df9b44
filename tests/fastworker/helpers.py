"""Stand-ins shared by the task queue's actor tests."""

from __future__ import annotations

from typing import Any

from actors import Actor, ActorContext, NoOptions


class Recorder(Actor[Any]):
    """Stands in for any actor a test only needs to watch: keeps what it is sent."""

    def __init__(self, options: NoOptions, context: ActorContext, *, got: list[Any]) -> None:
        super().__init__(options, context)
        self.got = got

    async def handle(self, message: Any) -> None:
        self.got.append(message)
