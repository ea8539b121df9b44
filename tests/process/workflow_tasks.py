"""Tasks the workflow process tests run (besides examples.tasks)."""

from __future__ import annotations

import json
import os

import trio

from fastworker import task


@task(name="tests.workflow.total")
async def total(numbers: list[float]) -> float:
    """The sum of a list: a fan-in."""
    return sum(numbers)


@task(name="tests.workflow.pair")
async def pair(left: object, right: object) -> list[object]:
    return [left, right]


@task(name="tests.workflow.mark")
async def mark(label: str, path: str, value: object, seconds: float = 0.0) -> object:
    """Append ``label`` to the file ``path`` (one line, one write), take
    ``seconds``, and return ``value``: a run the tests can count."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{label}\n".encode())
    finally:
        os.close(descriptor)
    await trio.sleep(seconds)
    return value


@task(name="tests.workflow.fails_once")
async def fails_once(value: object, path: str) -> object:
    """Fail the first time (no file at ``path`` yet: it is made), then
    return ``value``: a step to retry."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError("the first run fails")
    return value


@task(name="tests.workflow.note")
async def note(what: dict[str, object], path: str) -> None:
    """Write ``what`` (an error handler's argument) to ``path`` as JSON."""
    with open(path, "w") as file:
        json.dump(what, file)


@task(name="tests.workflow.upto")
async def upto(count: int) -> range:
    """The numbers below ``count`` (any iterable will do before a .map())."""
    return range(count)


@task(name="tests.workflow.mark_item")
async def mark_item(item: int, path: str, seconds: float) -> int:
    """``mark`` for a .map(): the item as ``m<item>``, returned."""
    await mark(f"m{item}", path, None, seconds)
    return item
