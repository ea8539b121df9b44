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


if __name__ == "__main__":
    trio.run(main)
