"""A one-shot answer for one waiting caller.

The coalescer and the result poller hand each caller a ``Slot`` and set or
fail it from their own tasks; the caller awaits it. Setting never blocks,
and only the first answer counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, final

import anyio

__all__ = ["Slot"]

T = TypeVar("T")


@final
class Slot(Generic[T]):
    """A one-shot answer for one caller: a value, or an exception to raise."""

    __slots__ = ("_event", "_value", "_error", "_on_done")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._on_done: Callable[[Slot[T]], None] | None = None

    def set(self, value: T) -> None:
        """Answer with ``value`` (ignored once answered)."""
        if not self._event.is_set():
            self._value = value
            self._done()

    def fail(self, error: BaseException) -> None:
        """Answer with ``error``, which ``get`` raises (ignored once answered)."""
        if not self._event.is_set():
            self._error = error
            self._done()

    @property
    def done(self) -> bool:
        """Whether the answer is in."""
        return self._event.is_set()

    def when_done(self, callback: Callable[[Slot[T]], None]) -> None:
        """Call ``callback(self)`` once the answer is in (at once if it is).
        It runs inside ``set``/``fail``, so it must not block or raise."""
        self._on_done = callback
        if self._event.is_set():
            callback(self)

    def _done(self) -> None:
        self._event.set()
        if self._on_done is not None:
            self._on_done(self)

    def get(self) -> T:
        """The answer, once it is in (raises the failure)."""
        assert self._event.is_set()
        if self._error is not None:
            raise self._error
        value: T = self._value
        return value

    async def settled(self) -> None:
        """Wait for the answer, without taking it (``get`` does)."""
        await self._event.wait()

    async def wait(self) -> T:
        """Wait for the answer and return it (raises the failure). An
        answer already in is returned without a trip through the event
        loop: a caller taking thousands of answers in a row pays none."""
        if not self._event.is_set():
            await self._event.wait()
        return self.get()
