"""The tasks of the small app in docs/from-celery.md, written for fastworker.

From the repository root, run a control plane with them, then the app::

    fastworker run control --tasks examples.from_celery.tasks
    python -m examples.from_celery.app
"""

from __future__ import annotations

import itertools
import logging
import time

from fastworker import task

log = logging.getLogger(__name__)

#: Calls to the rate service (a stand-in for a real one that drops every other call).
_calls = itertools.count(1)


@task
def add(x: int, y: int) -> int:
    return x + y


@task(retries=3, retry_on=ConnectionError, timeout=10)
async def fetch_rate(currency: str) -> float:
    if next(_calls) % 2:
        raise ConnectionError("the rate service dropped the call")
    return {"EUR": 1.08, "GBP": 1.27}[currency]


@task(timeout=30)
def render_report(report_id: int, seconds: float) -> str:
    time.sleep(seconds)  # the real work
    return f"report {report_id}"


@task(cron="*/5 * * * *")
def purge_sessions() -> int:
    log.info("purged expired sessions")
    return 0
