"""Tasks for the dashboard's tests: ``hold`` runs until the test releases it."""

from __future__ import annotations

import trio

from fastworker import task

#: One gate per key, set by the test to let ``hold(key)`` finish.
GATES: dict[str, trio.Event] = {}


def gate(key: str) -> trio.Event:
    return GATES.setdefault(key, trio.Event())


@task(name="dash.hold")
async def hold(key: str) -> str:
    await gate(key).wait()
    return key
