"""Tasks the end-to-end tests load into a real control plane
(``FASTWORKER_TASKS=examples.tasks,tests.process.control_tasks``)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import trio

from fastworker import task

_order = itertools.count(1)


@task(name="tests.gate")
async def gate(path: str) -> str:
    """Holds its executor slot until the file `path` exists."""
    while not Path(path).exists():
        await trio.sleep(0.005)
    return "opened"


@task(name="tests.order")
async def order(label: str) -> tuple[str, int]:
    """Returns its label and the order in which it ran in this process."""
    return label, next(_order)


@task(name="tests.tally")
async def tally(path: str, label: str) -> int:
    """Appends ``label`` as a line to the file ``path``; returns the lines
    the file holds now (how many times tallied tasks ran)."""
    with Path(path).open("a") as file:
        file.write(label + "\n")
    return len(Path(path).read_text().splitlines())


@task(name="tests.log_warning")
def log_warning(text: str) -> str:
    """A sync task (run in the executor's pool) that logs a WARNING of its own."""
    logging.getLogger("tests.tasks").warning("from the task: %s", text)
    return text
