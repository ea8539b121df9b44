"""Submit tasks from blocking code (scripts, Django views) with SyncClient.

    python examples/sync_client.py
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples import tasks
from fastworker import SyncClient


def main() -> None:
    with SyncClient() as client:
        print("add(2, 3) =", client.submit(tasks.add, 2, 3))
        ids = client.delay_many(tasks.add, [(n, 1) for n in range(3)])
        print("results:", [client.result(task_id, timeout=10) for task_id in ids])


if __name__ == "__main__":
    main()
