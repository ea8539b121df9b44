"""One log line per task outcome (``fastworker.executor.outcome_log``):
its level, what it says, and the rate limit."""

from __future__ import annotations

import logging

import pytest

from fastworker.executor.outcome_log import OutcomeLog
from fastworker.messages import Job, Outcome, RemoteError


def job(id: str = "t1", task: str = "app.resize") -> Job:
    return Job(id=id, task=task, payload=b"", priority=2, attempt=1, timeout=None)


def outcome(id: str = "t1", *, error: RemoteError | None = None, attempt: int = 1,
            retry_in: float | None = None) -> Outcome:
    return Outcome(id=id, attempt=attempt, worker="w1", value=None if error else b"v",
                   error=error, started_at=100.0, finished_at=100.25, retry_in=retry_in)


BOOM = RemoteError(type="ValueError", message="bad width: -3\nmore detail",
                   traceback="Traceback (most recent call last): ...")


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="fastworker.tasks")
    return caplog


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "fastworker.tasks"]


def test_each_outcome_is_one_line_at_its_level(lines: pytest.LogCaptureFixture) -> None:
    log = OutcomeLog("host:42")
    log.outcome(outcome(), job())
    log.outcome(outcome(error=BOOM, retry_in=0.5), job())
    log.outcome(outcome(error=BOOM, attempt=3), job())
    log.outcome(outcome(error=RemoteError(type="TaskCancelled", kind="cancelled",
                                          message="cancelled before it started")), job())
    log.outcome(outcome(error=RemoteError(type="TaskExpired", kind="expired",
                                          message="its deadline passed")), None)
    assert said(lines) == [
        ("DEBUG", "task app.resize[t1] succeeded in 0.250 s on host:42"),
        ("INFO", "task app.resize[t1] attempt 1 failed on host:42: ValueError: bad width: -3; "
                 "retrying in 0.50 s"),
        ("WARNING", "task app.resize[t1] failed after 3 attempts on host:42: ValueError: bad "
                    "width: -3"),
        ("INFO", "task app.resize[t1] cancelled on host:42: cancelled before it started"),
        ("WARNING", "task [t1] expired on host:42: its deadline passed"),
    ]


def test_past_the_rate_the_rest_of_the_second_is_counted_then_said(
        lines: pytest.LogCaptureFixture) -> None:
    now = [1000.2]
    log = OutcomeLog("w", per_second=3, now=lambda: now[0])
    for n in range(5):
        log.outcome(outcome(f"t{n}", error=BOOM), job(f"t{n}"))
    log.outcome(outcome("ok"), job("ok"))  # successes are DEBUG: not limited
    now[0] = 1001.0
    log.outcome(outcome("t5", error=BOOM), job("t5"))
    messages = [message for level, message in said(lines) if level != "DEBUG"]
    assert [m.split("[")[1].split("]")[0] for m in messages] == ["t0", "t1", "t2", "t5"]
    assert messages[-1].endswith("(2 more task outcome lines left out before this one)")


def test_a_success_costs_no_line_unless_debug_is_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastworker.tasks")
    OutcomeLog("w").outcome(outcome(), job())
    assert said(caplog) == []
