"""The task names the inbox knows, to refuse a Submit of an unknown task.

Names come from a source (this process's task registry by default), asked
again at most once per request when a Submit names a task not known yet,
and from ``KnownTasks`` (names a subworker can run). An unknown name gets a
message naming the closest known one and some of the others.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable

from fastworker import tasks

__all__ = ["TaskNames"]

#: Known task names shown in an UnknownTask message.
_NAMES_SHOWN = 10


class TaskNames:
    """Known task names.

    Args:
        source: returns the names registered here; by default
            ``fastworker.tasks.default_registry().names``, looked up when asked.
    """

    def __init__(self, source: Callable[[], Collection[str]] | None = None) -> None:
        self._source = source
        #: The names the source gave when last asked.
        self.known: frozenset[str] = frozenset()
        self._advertised: set[str] = set()
        self._fresh = False

    def refresh(self) -> None:
        """Ask the source for its names now."""
        source = self._source if self._source is not None else tasks.default_registry().names
        self.known = frozenset(source())
        self._fresh = True

    def ask_again(self) -> None:
        """Let the next unknown name be looked up in the source again (the
        inbox calls this once per request: a task may have been registered)."""
        self._fresh = False

    def advertise(self, names: Iterable[str]) -> None:
        """Add names that others can run (``KnownTasks``)."""
        self._advertised.update(names)

    def knows(self, name: str) -> bool:
        if name in self.known or name in self._advertised:
            return True
        if not self._fresh:
            self.refresh()
            return name in self.known
        return False

    def unknown(self, name: str) -> str:
        """The message of an UnknownTask for ``name``."""
        known = sorted(self.known | self._advertised)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(known[:_NAMES_SHOWN]) or "none"
        if len(known) > _NAMES_SHOWN:
            shown += f", and {len(known) - _NAMES_SHOWN} more"
        return f"unknown task {name!r}{hint} (known: {shown})"
