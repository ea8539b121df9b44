"""The operator's view built from snapshots (``fastworker.admin.status``),
throughput from running totals, and the checks on an operator's messages."""

from __future__ import annotations

import pytest

from fastworker.admin.retrying import retry_id
from fastworker.admin.status import Node, Rates, cluster_status
from fastworker.commands.cluster import status_json, status_text, workers_text
from fastworker.limits import MAX_BULK, check_admin
from fastworker.messages import Purge, RetryTasks, SetDrain
from fastworker.stats import InboxStats, ResultStoreStats
from tests.dashboard.harness import loaded_workers

NODE = Node(name="control", version="1.2.3", started_at=1000.0, host="cp-host", pid=7)


def test_rates_are_the_mean_over_the_window_and_ignore_a_restart() -> None:
    rates = Rates(window=10.0)
    assert rates.now() == (0.0, 0.0, 0.0)  # one reading is no rate
    rates.add(0.0, 0, 0, 0)
    rates.add(5.0, 50, 40, 5)
    assert rates.now() == (10.0, 8.0, 1.0)
    rates.add(10.0, 150, 140, 5)
    rates.add(15.0, 200, 190, 5)  # the first reading is out of the window now
    assert rates.now() == (15.0, 15.0, 0.0)
    rates.add(20.0, 10, 10, 0)  # counts from zero again: that step counts none
    assert rates.now() == (5.0, 5.0, 0.0)


def test_the_status_counts_every_worker_and_the_queue() -> None:
    snapshots = loaded_workers()
    inbox = InboxStats(queued=(1, 2, 30, 4), capacity=1000, parked=3, demand=0,
                       accepted_total=500, duplicates_total=0, rejected_total={},
                       dispatched_total=0, cancelled_total=0, requeued_total=0, scheduled=6)
    store = ResultStoreStats(
        entries=428, live_entries=0, bytes=4096, waiting_queries=0, finished_total=428,
        succeeded_total=400, failed_total=20, cancelled_total=7, expired_total=1,
        duplicates_total=0, duplicate_runs_total=0, stale_total=0, evicted_ttl=0,
        evicted_lru=0, evicted_bytes=0, queries_total=0, ignored_total=0)
    rates = Rates(10.0)
    rates.add(0.0, 0, 0, 0)
    rates.add(2.0, 10, 8, 2)
    status = cluster_status([*snapshots.values(), inbox, store, None], NODE, 2000.0, rates)
    assert status.queued == (1, 2, 30, 4) and status.scheduled == 6
    assert status.waiting_for_room == 3 and status.capacity == 1000
    assert status.in_flight == 13 + 9  # the local executor's, and what sub-1 holds
    assert (status.succeeded_total, status.failed_total, status.cancelled_total) == (400, 20, 7)
    assert status.rates == (5.0, 4.0, 1.0) and status.stored == 428
    assert not status.journal.enabled
    local, sub1, sub2 = status.workers
    assert (local.worker, local.local, local.running, local.waiting, local.free) == (
        "cp", True, 11, 2, 261)
    assert (sub1.health, sub1.running, sub1.waiting, sub1.free, sub1.slots) == (
        "alive", 7, 2, 77, (64, 8, 8))
    assert (sub2.health, sub2.running, sub2.free, sub2.reason) == (
        "lost", 0, 0, "no heartbeat for 5 s")

    text = status_text(status)
    assert "queue       critical 1  high 2  normal 30  low 4  (37 of 1,000; 6 scheduled; " \
        "3 waiting for room)" in text
    assert "workers     2 alive, 0 suspect, 1 lost, 0 left" in text
    assert "journal     off" in text
    table = workers_text(status.workers).splitlines()
    assert table[3].startswith("sub-2") and "lost: no heartbeat for 5 s" in table[3]
    data = status_json(status)
    assert data["queued"] == {"critical": 1, "high": 2, "normal": 30, "low": 4}
    assert data["uptime"] == 1000.0 and data["workers"][1]["slots"] == 80


@pytest.mark.parametrize(("message", "problem"), [
    (Purge(priority="urgent"), "Purge priority 'urgent' is not one of critical, high"),
    (Purge(task="x" * 600), "Purge task is 600 characters"),
    (RetryTasks(ids=("a",) * (MAX_BULK + 1)), f"RetryTasks names {MAX_BULK + 1} ids"),
    (RetryTasks(failed=True, limit=0), "RetryTasks limit 0 is not within"),
    (RetryTasks(ids=("",)), "RetryTasks id must not be empty"),
    (RetryTasks(failed=True, before=float("nan")), "RetryTasks before nan is not a time"),
    (RetryTasks(failed=True, nonce="n" * 33), "RetryTasks nonce is 33 characters"),
    (SetDrain(worker=""), "SetDrain worker must not be empty"),
])
def test_an_operators_message_out_of_bounds_is_refused_with_why(message: object,
                                                                 problem: str) -> None:
    found = check_admin(message)  # type: ignore[arg-type]
    assert found is not None and found.startswith(problem)


def test_a_retrys_id_is_the_same_for_the_same_request() -> None:
    """So that a retry request sent twice is one task each (the inbox
    knows the id), and another request's retry is another task."""
    assert retry_id("3f2a-17", "0a1b2c3d") == "3f2a-17-retry-0a1b2c3d"
    assert retry_id("3f2a-17", "0a1b2c3d") != retry_id("3f2a-17", "ffffffff")
    long = "x" * 256
    assert retry_id(long, "0a1b2c3d") == retry_id(long, "0a1b2c3d")
    assert retry_id(long, "0a1b2c3d") != retry_id("y" * 256, "0a1b2c3d")
    assert len(retry_id(long, "0a1b2c3d")) <= 256


def test_an_operators_message_within_bounds_passes() -> None:
    assert check_admin(Purge(priority="low", task="a.b", scheduled=True)) is None
    assert check_admin(RetryTasks(ids=("a", "b"), limit=MAX_BULK)) is None
    assert check_admin(SetDrain(worker="host:1", resume=True)) is None
