"""Per task name figures (``fastworker.results.task_metrics``): final
states, run-time and queue-wait histograms, and the bound on names."""

from __future__ import annotations

from fastworker.messages import RemoteError, TaskRecord
from fastworker.results.task_metrics import OTHER, TaskMetrics
from fastworker.stats import BUCKETS


def ended(task: str, state: str = "succeeded", *, queued: float = 100.0,
          started: float = 100.5, finished: float = 100.52) -> TaskRecord:
    return TaskRecord(id=f"{task}-{state}-{started}", state=state, task=task,  # type: ignore[arg-type]
                      queued_at=queued, started_at=started, finished_at=finished)


def test_states_run_times_and_waits_are_counted_per_task() -> None:
    metrics = TaskMetrics()
    metrics.observe(ended("app.resize"))
    metrics.observe(ended("app.resize", "failed", started=103.0, finished=105.0))
    metrics.observe(ended("app.mail", "cancelled", started=0.0, finished=101.0))
    mail, resize = metrics.snapshot()
    assert (mail.task, mail.states, mail.run.count, mail.wait.count) == (
        "app.mail", (("cancelled", 1),), 0, 0)  # never ran: no run time, no wait
    assert resize.states == (("failed", 1), ("succeeded", 1))
    assert resize.run.count == 2 and abs(resize.run.sum - 2.02) < 1e-9
    # 0.02 s in the (0.01, 0.025] bucket, 2 s in (1, 2.5].
    assert resize.run.counts[BUCKETS.index(0.025)] == 1
    assert resize.run.counts[BUCKETS.index(2.5)] == 1
    assert resize.wait.count == 2 and abs(resize.wait.sum - 3.5) < 1e-9
    assert resize.wait.counts[BUCKETS.index(0.5)] == 1
    assert resize.wait.counts[BUCKETS.index(5.0)] == 1
    assert len(resize.run.counts) == len(BUCKETS) + 1


def test_a_run_longer_than_every_bucket_is_counted_in_the_last() -> None:
    metrics = TaskMetrics()
    metrics.observe(ended("app.etl", started=100.0, finished=100.0 + 2 * BUCKETS[-1]))
    (etl,) = metrics.snapshot()
    assert etl.run.counts[-1] == 1 and sum(etl.run.counts) == 1


def test_an_outcome_that_never_ran_has_no_run_time_nor_wait() -> None:
    """Cancelled before it started, expired, or unknown on its worker: the
    outcome's start is its end, and no run is counted."""
    metrics = TaskMetrics()
    never = RemoteError(type="TaskExpired", kind="expired", message="too late")
    metrics.observe(TaskRecord(id="x", state="expired", task="app.t", queued_at=100.0,
                               started_at=130.0, finished_at=130.0, error=never))
    (t,) = metrics.snapshot()
    assert (t.states, t.run.count, t.wait.count) == ((("expired", 1),), 0, 0)


def test_names_past_the_bound_share_one_series() -> None:
    metrics = TaskMetrics(max_names=2)
    for name in ("a", "b", "c", "d", "a"):
        metrics.observe(ended(name))
    series = {s.task: dict(s.states)["succeeded"] for s in metrics.snapshot()}
    assert series == {"a": 2, "b": 1, OTHER: 2}
