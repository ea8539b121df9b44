"""The priority levels' choice of the next job: strict priority with a
starvation guard, and fairness keys taking turns within a level."""

from __future__ import annotations

from fastworker.budget import Budget
from fastworker.inbox.levels import Levels
from fastworker.messages import Job


def job(id: str, key: str = "", priority: int = 2, task: str = "t") -> Job:
    return Job(id=id, task=task, payload=b"", priority=priority, timeout=None, fair_key=key)


def budget(levels: Levels, n: int, only: frozenset[str] | None = None) -> Budget:
    """``n`` free slots for ``only``'s tasks (``None``: any queued)."""
    tasks = frozenset(j.task for j in levels.jobs.values()) if only is None else only
    return Budget([(n, tasks)])


def take_all(levels: Levels, only: frozenset[str] | None = None) -> list[str]:
    return [j.id for j in levels.take(budget(levels, 10**9, only), lambda j: None)]


def test_without_keys_a_level_is_first_in_first_out() -> None:
    levels = Levels(starvation_limit=100)
    for i in range(10):
        levels.append(job(f"j{i}"))
    assert take_all(levels) == [f"j{i}" for i in range(10)]
    assert levels.fair_keys == 0


def test_keys_take_turns_one_job_each() -> None:
    levels = Levels(starvation_limit=100)
    for i in range(3):
        levels.append(job(f"a{i}", "a"))
    levels.append(job("b0", "b"))
    levels.append(job("n0"))  # no key: one turn among the keys
    levels.append(job("b1", "b"))
    assert take_all(levels) == ["a0", "b0", "n0", "a1", "b1", "a2"]


def test_one_flooding_key_does_not_hold_up_quiet_keys() -> None:
    """50,000 tasks of one key queued first; 9 quiet keys' single tasks each
    start within 10 slots."""
    levels = Levels(starvation_limit=100)
    for i in range(50_000):
        levels.append(job(f"flood{i}", "flood"))
    for k in range(9):
        levels.append(job(f"quiet{k}", f"tenant-{k}"))
    assert levels.fair_keys == 10
    assert levels.top_fair_keys(2) == (("flood", 50_000), ("tenant-0", 1))
    started = [j.id for j in levels.take(budget(levels, 20), lambda j: None)]
    for k in range(9):
        assert started.index(f"quiet{k}") < 10
    assert levels.fair_keys == 1
    # A quiet task arriving later waits for one turn of the flood, not for it all.
    levels.append(job("late", "tenant-late"))
    assert [j.id for j in levels.take(budget(levels, 2), lambda j: None)][1] == "late"


def test_a_key_queue_goes_when_empty() -> None:
    levels = Levels(starvation_limit=100)
    for k in range(1000):
        levels.append(job(f"j{k}", f"k{k}"))
    take_all(levels)
    assert levels.fair_keys == 0
    assert not any(levels._queues) and not any(levels._turns)


def test_cancel_of_keyed_jobs_keeps_the_turns() -> None:
    levels = Levels(starvation_limit=100)
    for i in range(3):
        levels.append(job(f"a{i}", "a"))
    levels.append(job("b0", "b"))
    levels.append(job("c0", "c"))
    assert levels.remove("a0") and levels.remove("b0")
    assert not levels.remove("b0")
    assert levels.top_fair_keys(5) == (("a", 2), ("c", 1))
    assert take_all(levels) == ["a1", "c0", "a2"]
    assert levels.fair_keys == 0


def test_many_cancels_rebuild_the_queues_and_drop_empty_keys() -> None:
    levels = Levels(starvation_limit=100)
    for i in range(200):
        levels.append(job(f"x{i}", f"k{i}"))
    levels.append(job("keep", "keep"))
    for i in range(200):
        levels.remove(f"x{i}")
    # At most 64 cancelled jobs (or as many as are live) stay in the queues.
    assert "keep" in levels._queues[2] and len(levels._queues[2]) <= 1 + 64
    assert len(levels._turns[2]) == len(levels._queues[2])
    assert levels.fair_keys == 1
    assert take_all(levels) == ["keep"]


def test_a_requeued_keyed_job_goes_first_in_its_key_and_takes_the_next_turn() -> None:
    levels = Levels(starvation_limit=100)
    levels.append(job("a1", "a"))
    levels.append(job("b0", "b"))
    assert levels.push_front(job("a0", "a"))
    assert levels.push_front(job("c0", "c"))  # a key with no queue: the next turn
    assert not levels.push_front(job("c0", "c"))
    assert take_all(levels) == ["c0", "a0", "b0", "a1"]


def test_a_filtered_take_rotates_the_keys_too() -> None:
    levels = Levels(starvation_limit=100)
    levels.append(job("a0", "a", task="x"))
    levels.append(job("a1", "a", task="y"))
    levels.append(job("a2", "a", task="y"))
    levels.append(job("b0", "b", task="y"))
    levels.append(job("b1", "b", task="y"))
    assert take_all(levels, frozenset({"y"})) == ["a1", "b0", "a2", "b1"]
    assert take_all(levels) == ["a0"]


def test_the_starvation_guard_holds_across_levels_with_keys() -> None:
    levels = Levels(starvation_limit=3)
    for i in range(10):
        levels.append(job(f"c{i}", f"k{i % 2}", priority=0))
    levels.append(job("low", "k0", priority=3))
    order = take_all(levels)
    assert order.index("low") == 3
    assert order[:3] == ["c0", "c1", "c2"]


def test_jobs_without_a_key_share_one_turn_through_cancel_requeue_and_filter() -> None:
    levels = Levels(starvation_limit=100)
    levels.append(job("n0"))
    levels.append(job("a0", "a", task="x"))
    levels.append(job("n1", task="x"))
    levels.append(job("n2"))
    assert levels.remove("n0")
    assert take_all(levels, frozenset({"x"})) == ["n1", "a0"]
    assert levels.push_front(job("n9"))
    levels.append(job("b0", "b"))
    assert take_all(levels) == ["n9", "b0", "n2"]
    assert not any(levels._turns) and not any(levels._plain)
    # A plain queue emptied by cancels leaves the turns once it is swept.
    for i in range(100):
        levels.append(job(f"p{i}"))
    levels.append(job("k0", "k"))
    for i in range(100):
        levels.remove(f"p{i}")
    assert take_all(levels) == ["k0"]
    assert not any(levels._turns) and not any(levels._queues)
