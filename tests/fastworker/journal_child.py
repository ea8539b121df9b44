"""A process that holds or writes a journal, for the journal's process tests.

    python journal_child.py hold PATH         open it, print "ready <pid>", wait for stdin to close
    python journal_child.py write PATH RUN    write batches forever; print "acked RUN-B N" once
                                              batch B (ids RUN-B-0 .. RUN-B-(N-1)) is committed

A line is printed only after the commit it reports has returned, so every
id printed is acknowledged, whenever the process is killed.
"""

from __future__ import annotations

import os
import random
import sys

import trio

from fastworker.journal import JournalFile, JournalWriter, PutTask
from fastworker.messages import Job

#: Largest batch: big enough that a kill often lands inside a commit.
MAX_BATCH = 1500
PAYLOAD = b"p" * 256


def job(task_id: str, priority: int) -> Job:
    return Job(id=task_id, task="noop", payload=PAYLOAD, priority=priority, timeout=None)


def hold(path: str) -> None:
    file = JournalFile.open(path)
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.read()
    file.close()


async def write(path: str, run: str) -> None:
    rng = random.Random(f"{run}-{os.getpid()}")
    async with JournalWriter.open(path, checkpoint_every=4) as writer:
        print("ready", flush=True)
        batch = 0
        while True:
            size = rng.randint(1, MAX_BATCH)
            prefix = f"{run}-{batch}"
            ops = [PutTask(job(f"{prefix}-{i}", i % 4)) for i in range(size)]
            commit = await writer.write(ops)
            await commit.wait()
            print(f"acked {prefix} {size}", flush=True)
            batch += 1


if __name__ == "__main__":
    mode, path, *rest = sys.argv[1:]
    if mode == "hold":
        hold(path)
    else:
        trio.run(write, path, rest[0])
