"""The app of docs/from-celery.md, written for fastworker: it calls the
tasks of ``examples/from_celery/tasks.py`` the ways a Celery app does.

From the repository root, with a control plane running those tasks::

    fastworker run control --tasks examples.from_celery.tasks
    python -m examples.from_celery.app

Each ``print`` line ends with what it prints.
"""

from __future__ import annotations

import time

from examples.from_celery.tasks import add, fetch_rate, render_report
from fastworker import SyncClient, TaskTimeout


def main() -> None:
    with SyncClient() as client:  # at $FASTWORKER_ADDRESS, else tcp://127.0.0.1:5555
        # Queue a task; wait for its result.
        task_id = client.delay(add, 2, 3)
        print("add:", client.result(task_id, timeout=10))  # add: 5

        # Run it in 2 s: the control plane holds it until then.
        task_id = client.send(add, (4, 5), countdown=2)
        print("countdown:", client.status(task_id).state)  # countdown: scheduled
        print("countdown:", client.result(task_id, timeout=10))  # countdown: 9

        # A ConnectionError is retried: a new attempt of the same task id.
        task_id = client.delay(fetch_rate, "EUR")
        print("rate:", client.result(task_id, timeout=30))  # rate: 1.08
        print("attempts:", client.status(task_id).attempt)  # attempts: 2

        # Past its time limit, the task's process is killed.
        task_id = client.send(render_report, (1, 60.0), timeout=1.0)
        try:
            client.result(task_id, timeout=10)
        except TaskTimeout as error:
            print("time limit:", type(error).__name__)  # time limit: TaskTimeout

        # Cancel a task while it runs.
        task_id = client.delay(render_report, 2, 60.0)
        while client.status(task_id).state != "running":
            time.sleep(0.1)
        print("cancel:", client.cancel(task_id))  # cancel: terminated


if __name__ == "__main__":
    main()
