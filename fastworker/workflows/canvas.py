"""Workflows as a user writes them, and the graph they stand for (no trio).

A step is a task with its arguments, written ``resize.s(path, width=200)``
(``.si(...)``: a step that does not take its parents' results). Steps
compose:

- ``a | b | c`` (or ``chain(a, b, c)``): one after the other; each step
  gets the result of the one before as its first argument;
- ``group(a, b, c)``: side by side; what comes after gets their results
  as one list, in order;
- ``group(...) | merge.s()`` (or ``chord(group(...), merge.s())``): a
  fan-in, once every member has ended;
- ``split.s() | resize.map(width=200)``: a fan-out known only when it
  runs: ``resize`` once per item of the list ``split`` returns (each item
  its first argument); what follows gets their results as one list;
- ``Workflow()``: any graph, step by step, ``wf.add(step, after=[...])``.

``steps(workflow)`` turns any of them into the flat graph the control
plane runs: each step with its task, its pickled call, the steps it waits
for, and how it takes their results (none, the one, or a list).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Union

import attrs

from fastworker.payload import pack_call

__all__ = ["Chain", "Group", "Signature", "StepRef", "StepSpec", "Workflow", "chain", "chord",
           "group", "steps"]

#: How a step takes its parents' results: not at all, the one parent's
#: result as its first argument, every parent's result in a list, or
#: ``each``: once per item of the one parent's result (``task.map()``).
Input = Literal["none", "one", "list", "each"]


@attrs.frozen(kw_only=True)
class StepSpec:
    """One step of the graph the control plane runs.

    Attributes:
        task: the task's name.
        payload: its call's pickled arguments (``payload.pack_call``).
        after: the steps (indexes) it waits for, in the order their
            results are passed.
        input: how it takes their results.
        priority: its priority's name (``None``: normal).
        timeout: its time limit in seconds (``None``: none).
    """

    task: str
    payload: bytes
    after: tuple[int, ...] = ()
    input: Input = "none"
    priority: str | None = None
    timeout: float | None = None


@attrs.frozen(eq=False)
class Signature:
    """A task with its arguments, not yet run: one step (``task.s(...)``)."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    #: Does not take its parents' results (``task.si(...)``).
    immutable: bool = False
    #: Runs once per item of its parent's result (``task.map(...)``).
    each: bool = False
    #: The task's defaults, unless ``set`` changed them.
    priority: str | None = None
    timeout: float | None = None

    def __or__(self, other: Part) -> Chain:
        return chain(self, other)

    def set(self, **options: Any) -> Signature:
        """The same step with other ``priority`` or ``timeout``."""
        unknown = set(options) - {"priority", "timeout"}
        if unknown:
            raise TypeError(f"a step's options are priority and timeout, not "
                            f"{', '.join(sorted(unknown))}")
        return attrs.evolve(self, **options)


@attrs.frozen(eq=False)
class Chain:
    """Parts one after the other (``chain(...)`` or ``a | b``)."""

    parts: tuple[Part, ...]

    def __or__(self, other: Part) -> Chain:
        return chain(self, other)


@attrs.frozen(eq=False)
class Group:
    """Parts side by side; what follows takes their results as a list."""

    parts: tuple[Part, ...]

    def __or__(self, other: Part) -> Chain:
        return chain(self, other)


Part = Union[Signature, Chain, Group]


def chain(*parts: Part) -> Chain:
    """``parts`` one after the other; a chain inside is flattened."""
    flat: list[Part] = []
    for part in parts:
        flat.extend(part.parts if isinstance(part, Chain) else (part,))
    if not flat:
        raise ValueError("a chain needs at least one step")
    return Chain(tuple(flat))


def group(*parts: Part | Iterable[Part]) -> Group:
    """``parts`` side by side (given one by one, or as one iterable)."""
    members: list[Part] = []
    for part in parts:
        if isinstance(part, (Signature, Chain, Group)):
            members.append(part)
        else:
            members.extend(part)
    if not members:
        raise ValueError("a group needs at least one step")
    return Group(tuple(members))


def chord(header: Group, body: Part) -> Chain:
    """``body`` once every member of ``header`` has ended, with their
    results as a list: ``header | body``."""
    return chain(header, body)


@attrs.frozen(eq=False)
class StepRef:
    """A step added to a ``Workflow``: what later steps name in ``after``."""

    index: int


class Workflow:
    """A graph of steps that fits no line: add each with the steps it waits
    for. A step with one parent gets that parent's result as its first
    argument, one with several gets their results as a list (in the order
    of ``after``), unless it is immutable (``.si``) or ``takes=False``."""

    def __init__(self) -> None:
        self._steps: list[StepSpec] = []

    def add(self, step: Signature, *, after: Sequence[StepRef] = (),
            takes: bool = True) -> StepRef:
        parents = tuple(ref.index for ref in after)
        for index in parents:
            if not 0 <= index < len(self._steps):
                raise ValueError(f"step {index} is not a step of this workflow")
        if len(set(parents)) != len(parents):
            raise ValueError("a step waits for each parent once")
        input: Input = "none"
        if step.each:
            if len(parents) != 1:
                raise ValueError("a .map() step waits for one step, over whose result it maps")
            input = "each"
        elif parents and takes and not step.immutable:
            input = "one" if len(parents) == 1 else "list"
        self._steps.append(_spec(step, parents, input))
        return StepRef(len(self._steps) - 1)

    @property
    def specs(self) -> tuple[StepSpec, ...]:
        return tuple(self._steps)


def steps(workflow: Part | Workflow) -> tuple[StepSpec, ...]:
    """The flat graph of ``workflow``, its steps in an order where each
    comes after those it waits for."""
    if isinstance(workflow, Workflow):
        if not workflow.specs:
            raise ValueError("a workflow needs at least one step")
        return workflow.specs
    built: list[StepSpec] = []
    ends, _ = _compile(workflow, (), False, built)
    if len(ends) != 1:
        raise ValueError("a workflow ends in one step, whose result is the workflow's: end a "
                         "group with a step that takes its list")
    return tuple(built)


def _spec(step: Signature, parents: tuple[int, ...], input: Input) -> StepSpec:
    return StepSpec(task=step.task, payload=pack_call(step.args, step.kwargs), after=parents,
                    input=input, priority=step.priority, timeout=step.timeout)


def _compile(part: Part, parents: tuple[int, ...], as_list: bool,
             built: list[StepSpec]) -> tuple[tuple[int, ...], bool]:
    """Add ``part``'s steps after ``parents`` (whose results are a list when
    ``as_list``: they were a group); return its last steps, and whether
    they are a group's."""
    if isinstance(part, Signature):
        input: Input = "none"
        if part.each:
            if len(parents) != 1 or as_list:
                raise ValueError("a .map() step follows one step, over whose result it maps "
                                 "(not a group, nor the start of a workflow)")
            input = "each"
        elif parents and not part.immutable:
            input = "list" if as_list or len(parents) > 1 else "one"
        built.append(_spec(part, parents, input))
        return (len(built) - 1,), False
    if isinstance(part, Chain):
        ends, ends_list = parents, as_list
        for inner in part.parts:
            ends, ends_list = _compile(inner, ends, ends_list, built)
        return ends, ends_list
    ends_all: list[int] = []
    for member in part.parts:
        ends, ends_list = _compile(member, parents, as_list, built)
        if len(ends) != 1 and not isinstance(member, Group):  # a group in a group: flattened
            raise ValueError("a group's member must end in one step, not in a group: "
                             "end it with a step that takes the group's list")
        ends_all.extend(ends)
    return tuple(ends_all), True
