"""A periodic workflow, loaded only by the test that watches it run
(``FASTWORKER_TASKS=...,tests.process.periodic_workflow_tasks``)."""

from __future__ import annotations

from examples.tasks import add
from fastworker.workflows import periodic
from tests.process.workflow_tasks import total, upto

#: Every 0.2 s: 0..2 each plus one, summed (6).
every_moment = periodic("tests.workflow.every_moment", upto.s(3) | add.map(1) | total.s(),
                        every=0.2, time_limit=30)
