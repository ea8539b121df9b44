"""The Executor, where tasks run: async ones on lanes, sync ones on worker
threads or, with ``isolation="process"``, in a pool of processes that a
time limit or a cancel can kill. See docs/executor.md.
"""

from fastworker.executor.actor import Executor as Executor
from fastworker.executor.options import ExecutorOptions as ExecutorOptions
from fastworker.executor.pool import ProcessPool as ProcessPool
from fastworker.executor.pool import ProcessPoolStats as ProcessPoolStats

__all__ = [
    "Executor",
    "ExecutorOptions",
    "ProcessPool",
    "ProcessPoolStats",
]

# Shown as fastworker.executor:Executor in logs and snapshots, where it was defined
# before this package was split (actors.topology.kind_name).
Executor.__module__ = __name__
