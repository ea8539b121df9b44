"""What a subworker's executor said of itself in its ``Credit``s: its slots
per kind, the most jobs it holds, its prefetch now and as the control plane
was last told, and its tasks with the kind of slot each needs. The session
registers with it and reports its prefetch when it changes.

It keeps what was said and builds the ``Register`` fields from it; it sends
nothing and holds no credit (the session counts that).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from fastworker.messages import Slots
from fastworker.tasks import default_registry

__all__ = ["ExecutorShape"]

log = logging.getLogger("fastworker.link")


class ExecutorShape:
    """The executor as its Credits describe it; ``known`` is set by its first."""

    def __init__(self, name: str) -> None:
        self._name = name
        #: Its slots per kind, and the most jobs it holds (its first Credit).
        self.slots: Slots = (0, 0, 0)
        self.holds: Slots = (0, 0, 0)
        #: Of each kind's credit, its prefetch now, and as the control plane
        #: was last told (by registering or a Report).
        self.prefetch: Slots = (0, 0, 0)
        self.prefetch_told: Slots = (0, 0, 0)
        #: Its tasks and the kind of each (its latest Credit that said);
        #: ``None``: it never said (the process's registry names them).
        self.tasks: dict[str, int] | None = None
        self.known = trio.Event()

    def said(self, slots: Slots, tasks: dict[str, int] | None, prefetch: Slots | None,
             holds: Slots | None) -> None:
        """A Credit of ``slots`` (its first: all it holds, nothing running)
        with, if it says, its ``tasks``, its ``prefetch`` now and the most it
        holds (``holds``; without it, its first credit is that)."""
        if prefetch is not None:
            self.prefetch = prefetch
        if tasks is not None:
            if self.known.is_set() and tasks != self.tasks:
                before = set(self.tasks or ())
                log.info(
                    "%s: the executor's tasks changed (%d now, %d new, %d gone); the control "
                    "plane learns them when this worker registers next", self._name, len(tasks),
                    len(tasks.keys() - before), len(before - tasks.keys()))
            self.tasks = dict(tasks)
        if not self.known.is_set():
            first = self.prefetch  # its slots are the first credit less its prefetch
            self.slots = (max(slots[0] - first[0], 0), max(slots[1] - first[1], 0),
                          max(slots[2] - first[2], 0))
            self.holds = slots if holds is None else holds
            self.known.set()

    def register_fields(self) -> dict[str, Any]:
        """Of a ``Register``: its slots, holds and prefetch, its tasks
        (sorted) with the kind of each, and those never to run twice. The
        prefetch is told from here on."""
        registry = default_registry()
        kinds_of = self.tasks
        tasks = tuple(sorted(registry.names() if kinds_of is None else kinds_of))
        self.prefetch_told = self.prefetch
        return {
            "slots": self.slots, "holds": self.holds, "prefetch": self.prefetch,
            "tasks": tasks,
            "kinds": () if kinds_of is None else tuple(kinds_of[n] for n in tasks),
            "at_most_once": tuple(n for n in tasks if (t := registry.get(n)) and t.at_most_once),
        }
