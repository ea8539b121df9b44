"""Tasks the journal's fleet crash test loads into its control plane and
subworker (``FASTWORKER_TASKS=examples.tasks,tests.process.fleet_tasks``).

``run`` tells the test's tally, over a Unix socket (no TCP port taken from
the range the control plane's ports come from), when it starts and ends,
with the pid of the process running it and the wall-clock time, so the test
knows at any moment which worker is running what, and afterwards which runs
a SIGKILL interrupted.
"""

from __future__ import annotations

import os
import time

import trio

from fastworker import task


@task(name="tests.fleet.run")
async def run(label: str, tally: str, seconds: float) -> str:
    """Say "start <label> <pid> <time>" to the tally at the socket path
    ``tally``, work for ``seconds``, say "end ...", and return the label."""
    stream = await trio.open_unix_socket(tally)
    async with stream:
        await stream.send_all(f"start {label} {os.getpid()} {time.time()!r}\n".encode())
        await trio.sleep(seconds)  # the work: a task that takes a while is running at a kill
        await stream.send_all(f"end {label} {os.getpid()} {time.time()!r}\n".encode())
    return label
