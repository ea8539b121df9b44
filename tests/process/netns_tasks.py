"""Tasks the network-namespace test loads into its control plane and its
subworker (``FASTWORKER_TASKS=examples.tasks,tests.process.netns_tasks``).

Both return the pid of the process that ran them: the hostname is the same
in every network namespace, the pid is not.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from fastworker import task


@task(name="netns.where")
async def where() -> int:
    """The pid of the process that ran it."""
    return os.getpid()


@task(name="netns.hold")
async def hold(path: str) -> int:
    """Holds its executor slot until the file ``path`` exists (the test
    creates it once it has seen what it waits for); then the pid of the
    process that ran it."""
    while not Path(path).exists():
        await trio.sleep(0.01)
    return os.getpid()
