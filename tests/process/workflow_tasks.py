"""Tasks the workflow process tests run (besides examples.tasks)."""

from __future__ import annotations

from fastworker import task


@task(name="tests.workflow.total")
async def total(numbers: list[float]) -> float:
    """The sum of a list: a fan-in."""
    return sum(numbers)


@task(name="tests.workflow.pair")
async def pair(left: object, right: object) -> list[object]:
    return [left, right]
