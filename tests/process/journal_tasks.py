"""Tasks the journal's crash tests load into a real control plane
(``FASTWORKER_TASKS=examples.tasks,tests.process.journal_tasks``)."""

from __future__ import annotations

import os

import trio

from fastworker import task


@task(name="tests.journal.record")
async def record(label: str, path: str) -> str:
    """Append ``label`` to the file ``path`` (one line, one write: lines of
    concurrent runs never mix), take a moment, and return the label."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{label}\n".encode())
    finally:
        os.close(descriptor)
    await trio.sleep(0.002)  # a task that takes a little while: some are running at a kill
    return label
