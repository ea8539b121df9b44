"""The ResultStore: every task's record, and the queries that wait for one.

``store`` is the actor (its options and message table), ``records`` the
records and their bounds, ``waiters`` the parked queries and watch
sessions. See docs/results.md.
"""

from fastworker.results.store import ResultStore as ResultStore
from fastworker.results.store import ResultStoreOptions as ResultStoreOptions
from fastworker.results.stored import RECORD_OVERHEAD_BYTES as RECORD_OVERHEAD_BYTES

__all__ = ["RECORD_OVERHEAD_BYTES", "ResultStore", "ResultStoreOptions"]

# Shown as fastworker.results:ResultStore in logs and snapshots, where it was defined
# before this package was split (actors.topology.kind_name).
ResultStore.__module__ = __name__
