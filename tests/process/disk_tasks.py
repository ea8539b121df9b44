"""A task the journal's disk-full test loads into a real control plane
(``FASTWORKER_TASKS=examples.tasks,tests.process.disk_tasks``)."""

from __future__ import annotations

from pathlib import Path

import trio

from fastworker import task


@task(name="tests.disk.wait_for", timeout=20.0)
async def wait_for(path: str) -> str:
    """Run until the file ``path`` exists (the test makes it), then return
    ``"done"``: a task that is running while the journal's disk is full."""
    while not Path(path).exists():
        await trio.sleep(0.01)
    return "done"
