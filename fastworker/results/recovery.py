"""What the store takes back from the journal at start: the final records
it kept, each with the TTL it had left.

The journal keeps when a record became final in wall-clock seconds (a
restart resets trio's clock); a record comes back as final since the same
moment on trio's clock, so its TTL runs on from where it was. Plain data,
no trio: the store passes both clocks in.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastworker.journal.ops import PutResult
from fastworker.results.records import RecordBook

__all__ = ["restore_results"]


def restore_results(records: RecordBook, results: Iterable[PutResult], *, wall: float,
                    now: float) -> tuple[int, list[str]]:
    """Hold again each of ``results`` (oldest ``final_at`` first, as the
    journal gives them) still within the TTL at wall-clock ``wall``.

    Args:
        records: where they are held again (their bounds are not enforced here).
        results: the journal's stored results.
        wall: the wall clock now, seconds.
        now: trio's clock now.

    Returns:
        How many came back, and the ids of those past their TTL (for the
        journal to drop).
    """
    ttl = records.ttl
    restored = 0
    expired: list[str] = []
    for result in results:
        # A final_at ahead of the wall clock (it was set back) counts as now.
        age = max(wall - result.final_at, 0.0)
        if age >= ttl:
            expired.append(result.record.id)
        elif records.restore(result.record, now - age):
            restored += 1
    return restored, expired
