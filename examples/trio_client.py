"""Submit tasks from trio to a running control plane (`make run`).

    python examples/trio_client.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples import tasks
from fastworker import Client, TaskError
from fastworker.workflows import group


async def main() -> None:
    async with Client() as client:
        # Wait for the result in one call...
        print("add(1, 2) =", await client.submit(tasks.add, 1, 2))
        # ...or queue now and collect later.
        task_id = await client.delay(tasks.checksum, b"hello")
        print("checksum(b'hello') =", await client.result(task_id, timeout=10))
        # Many calls at once are coalesced into a few frames.
        print("map(add) =", await client.map(tasks.add, [(n, n) for n in range(5)]))
        # A failing task raises TaskError with the remote type and message.
        try:
            await client.submit(tasks.fail, "on purpose")
        except TaskError as error:
            print("fail('on purpose') raised", error.remote_type, error.message)
        # Workflows run by the control plane: a chain, a fan-in, a fan-out
        # over a list a step returns (docs/workflows.md).
        print("chain =", await client.run(tasks.add.s(1, 2) | tasks.add.s(10), timeout=10))
        fan_in = group(tasks.add.s(n, n) for n in range(5)) | tasks.total.s()
        print("fan-in =", await client.run(fan_in, timeout=10))
        flow = await client.start(tasks.count.s(4) | tasks.add.map(100) | tasks.total.s())
        print("map =", await client.result(flow, timeout=10), "- steps:",
              [(step.task, step.state) for step in (await client.workflow(flow)).steps])


if __name__ == "__main__":
    trio.run(main)
