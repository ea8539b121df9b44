"""Budget: free slots per pool, charged job by job or many jobs of a task at once."""

from __future__ import annotations

from fastworker.budget import Budget


def test_a_job_takes_a_slot_of_the_pool_with_the_fewest_tasks_that_runs_it() -> None:
    """Pools that run more tasks keep their slots for jobs only they can take."""
    budget = Budget([(2, frozenset({"x", "y"})), (1, frozenset({"x"}))])
    assert budget.charge("x")
    assert (budget.total, budget.runnable) == (2, frozenset({"x", "y"}))
    assert budget.charge("y") and budget.charge("x")
    assert not budget.charge("y")
    assert (budget.total, budget.runnable) == (0, frozenset())


def test_many_jobs_of_a_task_are_charged_across_its_pools_at_once() -> None:
    """``charge(task, n)`` takes as many slots as ``n`` charges of one
    would: the fewest-task pool first, then the next; ``False`` when the
    pools had fewer, all of theirs taken."""
    budget = Budget([(3, frozenset({"x", "y"})), (2, frozenset({"x"})), (4, frozenset({"z"}))])
    assert budget.charge("x", 4)
    assert (budget.total, budget.runnable) == (5, frozenset({"x", "y", "z"}))
    assert not budget.charge("y", 2)
    assert (budget.total, budget.runnable) == (4, frozenset({"z"}))
    assert budget.charge("z", 0) and budget.total == 4
