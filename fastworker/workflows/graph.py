"""One running workflow: which steps may start, what each takes, and what
its end means for the rest (no trio).

The Workflow actor holds one ``Run`` per workflow. It asks ``ready()`` for
the steps to submit, tells ``started`` / ``ended`` as the store's records
say, and reads ``outcome`` once the run is over. A step's parents' results
are held (``values``) only until every step that takes them was started,
then let go: the store keeps them for its own TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import attrs

from fastworker.payload import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    join_parts,
    split_parts,
    split_result,
    with_inputs,
)
from fastworker.workflows.canvas import StepSpec

__all__ = ["Failure", "Restored", "Run", "Seen", "StepState", "error_step_id", "step_id"]

StepState = Literal["waiting", "started", "succeeded", "failed", "skipped"]


def step_id(workflow_id: str, index: int, generation: int = 0) -> str:
    """The task id of a workflow's step: ``<workflow>.<index>``, and
    ``<workflow>.<index>.<generation>`` when a retry from a failure runs it
    again (a task id ends once, so a new run needs a new one)."""
    return f"{workflow_id}.{index}" if not generation else f"{workflow_id}.{index}.{generation}"


def error_step_id(workflow_id: str, generation: int = 0) -> str:
    """The task id of a failed workflow's error handler."""
    return f"{workflow_id}.error" if not generation else f"{workflow_id}.error.{generation}"


class Seen(NamedTuple):
    """The newest record of a step's runs, as ``Run.restore`` takes it."""

    id: str
    state: str
    value: bytes | None = None
    error: str = ""


class Restored(NamedTuple):
    """What ``Run.restore`` found: the steps still running (to watch), and
    those to cancel (the run had failed: they run in vain)."""

    running: list[int]
    cancel: list[int]


_ENDED_BADLY = frozenset({"failed", "cancelled", "expired"})
#: Which failure found by ``restore`` names the run's: a step's own first.
_FAILURE_ORDER = {"failed": 0, "gone": 1, "expired": 2, "cancelled": 3}


@attrs.frozen(kw_only=True)
class Failure:
    """Why a run failed: the step, its task, and its error as text."""

    step: int
    task: str
    error: str


class Run:
    """A workflow's steps and their states.

    Args:
        id: the workflow's id (its steps' ids are ``step_id(id, index)``).
        specs: its steps, each after the steps it waits for
            (``canvas.steps``).
        keep_going: a failed step skips only the steps that wait for it;
            the others run on, and the run is over once they end.

    Raises:
        ValueError: a step waits for itself or for a later step.
    """

    def __init__(self, id: str, specs: Sequence[StepSpec], *, keep_going: bool = False) -> None:
        for index, spec in enumerate(specs):
            if any(not 0 <= parent < index for parent in spec.after):
                raise ValueError(f"step {index} waits for a step that is not before it")
        self.id = id
        self.specs = tuple(specs)
        self.keep_going = keep_going
        #: Stopped at once: cancelled, past its time limit, or failed (not
        #: ``keep_going``); what its started steps do next is not waited for.
        self.stopped = False
        #: Retries from a failure so far: a step started now runs as
        #: ``step_id(id, index, generation)``.
        self.generation = 0
        self.states: list[StepState] = ["waiting"] * len(specs)
        #: Each step's task id, once started ("" before).
        self.ids: list[str] = [""] * len(specs)
        #: Results of ended steps still needed by a step not yet started.
        self.values: dict[int, bytes] = {}
        self.failure: Failure | None = None
        self._children: list[list[int]] = [[] for _ in specs]
        for index, spec in enumerate(specs):
            for parent in spec.after:
                self._children[parent].append(index)
        #: Per step, its parents that have not succeeded yet; the steps
        #: with none that still wait (so a step's end costs its children,
        #: not a pass over every step).
        self._missing = [len(set(spec.after)) for spec in specs]
        self._ready = {index for index, missing in enumerate(self._missing) if not missing}
        #: Per step, whether its result comes in parts (a ``.map()`` follows).
        self._splits = [any(specs[child].input == "each" for child in children)
                        for children in self._children]
        #: Per ``.map()`` step running, its members' results (``None``: not yet).
        self.members: dict[int, list[bytes | None]] = {}
        self._members_open: dict[int, int] = {}
        self._member_bytes: dict[int, int] = {}
        #: Per step, its children that have not started yet (its result is
        #: let go when none is left); and the steps neither ended nor skipped.
        self._unstarted_children = [len(children) for children in self._children]
        self._open = len(specs)

    @property
    def over(self) -> bool:
        """Every step ended or was skipped."""
        return self._open == 0

    @property
    def ended(self) -> bool:
        """Over, or stopped: the run's outcome is known."""
        return self.stopped or self._open == 0

    def _close(self, index: int, state: StepState) -> None:
        if self.states[index] in ("waiting", "started"):
            self._open -= 1
        self.states[index] = state

    def ready(self) -> list[int]:
        """The waiting steps whose parents all succeeded (none once stopped)."""
        if self.stopped:
            return []
        return sorted(index for index in self._ready if self.states[index] == "waiting")

    def payload(self, index: int) -> bytes:
        """The call step ``index`` is submitted with: its own, with its
        parents' results first as its ``input`` says."""
        spec = self.specs[index]
        if spec.input == "none":
            payload = spec.payload
        else:
            inputs = [self.values[parent] for parent in spec.after]
            payload = with_inputs(spec.payload, inputs, as_list=spec.input == "list")
        return split_result(payload) if self._splits[index] else payload

    # -- a .map() step: one member per item of its parent's result -----------------

    def member_payloads(self, index: int) -> list[bytes]:
        """The calls of a ``.map()`` step's members: each item of its
        parent's result first, then the step's own arguments.

        Raises:
            ValueError: the parent's result is not in parts, or broken.
        """
        spec = self.specs[index]
        parts = split_parts(self.values[spec.after[0]])
        if parts is None:
            raise ValueError("the step before a .map() did not return its result in parts")
        return [with_inputs(spec.payload, [part], as_list=False) for part in parts]

    def started_members(self, index: int, count: int) -> bytes | None:
        """The ``.map()`` step ``index`` started ``count`` members. Returns
        its result if that is all (no members: an empty list)."""
        self.started(index)
        if not count:
            return join_parts([])
        self.members[index] = [None] * count
        self._members_open[index] = count
        return None

    def member_id(self, index: int, member: int) -> str:
        """The task id of a ``.map()`` step's member."""
        return f"{self.ids[index]}.m{member}"

    def open_members(self, index: int) -> list[int]:
        """The members of a ``.map()`` step not ended yet."""
        values = self.members.get(index)
        return [] if values is None else [i for i, v in enumerate(values) if v is None]

    def member_succeeded(self, index: int, member: int, value: bytes) -> bytes | None:
        """A member ended with ``value``. Returns the step's result (its
        members' results in parts) once every member has one."""
        values = self.members.get(index)
        if values is None or values[member] is not None:
            return None  # ended already, or a repeated record
        values[member] = value
        self._member_bytes[index] = held = self._member_bytes.get(index, 0) + len(value)
        if held > DEFAULT_MAX_PAYLOAD_BYTES:  # their list could never be passed on
            raise ValueError(f"the results of its members are over {held} bytes, past the "
                             f"limit of {DEFAULT_MAX_PAYLOAD_BYTES}")
        self._members_open[index] -= 1
        if self._members_open[index]:
            return None
        del self.members[index], self._members_open[index], self._member_bytes[index]
        return join_parts([v for v in values if v is not None])

    def started(self, index: int) -> None:
        """Step ``index`` was submitted; its parents' results are let go
        once no other waiting step takes them."""
        if self.states[index] != "waiting":
            return  # started already
        self.states[index] = "started"
        self.ids[index] = step_id(self.id, index, self.generation)
        self._ready.discard(index)
        for parent in self.specs[index].after:
            self._unstarted_children[parent] -= 1
            if not self._unstarted_children[parent]:
                self.values.pop(parent, None)

    def succeeded(self, index: int, value: bytes) -> None:
        """Step ``index`` ended with ``value`` (kept while a waiting step takes it)."""
        if self.states[index] in ("succeeded", "failed"):
            return  # a repeated record
        self._close(index, "succeeded")
        for child in set(self._children[index]):
            self._missing[child] -= 1
            if not self._missing[child]:
                self._ready.add(child)
        if any(self.states[child] == "waiting" and self.specs[child].input != "none"
               for child in self._children[index]):
            self.values[index] = value

    def failed(self, index: int, error: str) -> list[int]:
        """Step ``index`` failed (after its own retries), was cancelled or
        expired: the run fails, naming it (the first failure); every step
        not yet started is skipped (``keep_going``: those that wait for it).
        Returns the steps still started that the caller should cancel."""
        if self.states[index] in ("succeeded", "failed"):
            return []
        self._close(index, "failed")
        self.members.pop(index, None)
        self._members_open.pop(index, None)
        self._member_bytes.pop(index, None)
        failure = Failure(step=index, task=self.specs[index].task, error=error)
        if self.keep_going and not self.stopped:
            if self.failure is None:
                self.failure = failure
            self._skip_after(index)
            return []
        if self.failure is not None:
            return []  # its siblings were told to stop at the first failure
        return self._stop(failure)

    def _skip_after(self, index: int) -> None:
        """Skip the waiting steps that wait for ``index``, directly or not."""
        below = list(self._children[index])
        while below:
            child = below.pop()
            if self.states[child] == "waiting":
                self._close(child, "skipped")
                self._ready.discard(child)
                below.extend(self._children[child])
                for parent in self.specs[child].after:  # it will never take their results
                    self._unstarted_children[parent] -= 1
                    if not self._unstarted_children[parent]:
                        self.values.pop(parent, None)

    def cancel(self, why: str) -> list[int]:
        """Stop the run (an operator cancelled it, or its time ran out): as
        a failure of no step unless one failed first. Returns the steps
        still started (none if it had stopped already)."""
        if self.stopped:
            return []
        return self._stop(self.failure or Failure(step=-1, task="", error=why))

    def _stop(self, failure: Failure) -> list[int]:
        """Stop: every waiting step is skipped; the started ones."""
        self.failure = failure
        self.stopped = True
        for other, state in enumerate(self.states):
            if state == "waiting":
                self._close(other, "skipped")
        self.values.clear()
        return [other for other, state in enumerate(self.states) if state == "started"]

    def restore(self, seen: Sequence[Seen | None], *, retry: bool = False) -> Restored:
        """Take back where a new run's steps stand from their tasks' records:
        after a restart of the control plane, or for a retry from the
        failed step (``retry``: the steps that failed, were cancelled or
        expired wait to run again, the others keep their results).

        ``seen[index]`` is the newest record of step ``index``'s runs, or
        ``None`` (it never ran, or its record is gone). A step without a
        record whose children have one ran and ended long ago: it counts as
        succeeded, unless a step still to start takes its result, which is
        gone (the run fails, naming it). ``ready()`` then gives the steps to
        submit; a run whose step failed (not ``retry``) fails as it would
        have.
        """
        specs, children = self.specs, self._children
        # Whether a step ran (and is not to run again): its record says so,
        # or a step after it, however far, ran (its record may be gone).
        ran = [False] * len(specs)
        for index in range(len(specs) - 1, -1, -1):
            found = seen[index]
            ran[index] = ((found is not None and not (retry and found.state in _ENDED_BADLY)
                           and not (specs[index].input == "each"  # it expands again
                                    and found.state not in _ENDED_BADLY | {"succeeded"}))
                          or any(ran[child] for child in children[index]))
        failures: list[tuple[int, str, str]] = []
        running: list[int] = []
        for index, found in enumerate(seen):
            if found is None:
                if ran[index]:  # it ended before its record was let go
                    self.started(index)
                    if any(not ran[child] and specs[child].input != "none"
                           for child in children[index]):
                        failures.append((index, "gone", "its result is no longer kept (the "
                                                        "store let its record go)"))
                    else:
                        self.succeeded(index, b"")  # nobody still to start takes it
                continue
            if found.state in _ENDED_BADLY and retry:
                continue  # it runs again
            if specs[index].input == "each" and found.state not in _ENDED_BADLY | {"succeeded"}:
                continue  # a map step's own record ends with its members: it expands again
            self.started(index)
            self.ids[index] = found.id
            if found.state == "succeeded":
                self.succeeded(index, found.value if found.value is not None else b"")
            elif found.state in _ENDED_BADLY:
                failures.append((index, found.state, found.error or found.state))
            else:
                running.append(index)
        # The first failure named is a step that failed, rather than one
        # cancelled because of it (the end of the run was not written).
        failures.sort(key=lambda failure: _FAILURE_ORDER.get(failure[1], 0))
        cancel: list[int] = []
        for index, _, error in failures:
            cancel.extend(self.failed(index, error))
        return Restored(running=[index for index in running if self.states[index] == "started"],
                        cancel=cancel)

    def counts(self) -> dict[StepState, int]:
        """How many steps are in each state."""
        counts: dict[StepState, int] = {}
        for state in self.states:
            counts[state] = counts.get(state, 0) + 1
        return counts
