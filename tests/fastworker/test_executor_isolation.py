"""A sync task that kills its process (``os._exit``, ``os.abort``, a
segfault) in an executor whose sync tasks run in its pool: the job fails
with ``WorkerProcessDied``, its neighbours' outcomes all arrive, the
executor runs on, and the job is poison after ``poison_after`` deaths."""

from __future__ import annotations

import os
import signal

import attrs
import pytest
import trio

from fastworker.messages import PROCESS, Retry
from tests.fastworker import crash_tasks  # noqa: F401 (registers tests.crash.*)
from tests.fastworker.test_executor import executor, job, value_of


@pytest.mark.parametrize(("how", "said"), [
    ("exit", "exit code 1"),
    ("abort", f"killed by signal SIGABRT ({signal.SIGABRT.value})"),
    ("segfault", f"killed by signal SIGSEGV ({signal.SIGSEGV.value})"),
])
async def test_a_job_that_kills_its_process_fails_alone(how: str, said: str) -> None:
    async with executor(isolation="process", processes=2, prefetch=6, min_prefetch=6) as harness:
        crash = job("tests.crash.once", how)
        neighbours = [job("tests.sample.add", n, n) for n in range(6)]
        await harness.assign(neighbours[0], crash, *neighbours[1:])
        [outcome, *others] = await harness.outcomes_of(crash, *neighbours)
        after = job("tests.sample.pid")  # the executor still runs jobs
        await harness.assign(after)
        [ran] = await harness.outcomes_of(after)
        stats = await harness.stats()
        finished = [o.id for f in harness.results.messages if hasattr(f, "outcomes")
                    for o in f.outcomes]
    assert outcome.error is not None
    assert outcome.error.type == "WorkerProcessDied"
    assert f"died running task tests.crash.once: {said}" in outcome.error.message
    assert outcome.retry_in is None  # no retries: its last attempt
    assert [value_of(o) for o in others] == [2 * n for n in range(6)]
    assert value_of(ran) != os.getpid()
    assert sorted(finished) == sorted(j.id for j in [crash, *neighbours, after])  # once each
    assert (stats.in_flight, stats.failed_total, stats.succeeded_total) == (0, 1, 7)
    assert harness.dispatcher.granted(PROCESS) == 8 + 8  # every slot given back


async def test_a_job_whose_process_died_is_poison_at_the_first_death_by_default() -> None:
    async with executor(isolation="process", processes=1) as harness:
        crash = job("tests.crash.retried", "exit")
        await harness.assign(crash)
        [outcome] = await harness.outcomes_of(crash)
    assert outcome.error is not None and outcome.error.type == "PoisonTask"
    assert "died running task tests.crash.retried: exit code 1" in outcome.error.message
    assert "died running it 1 time: failed as poison (poison_after = 1)" in (
        outcome.error.message)
    assert outcome.retry_in is None
    assert harness.dispatcher.of(Retry) == []


async def test_poison_after_counts_deaths_across_attempts() -> None:
    """With ``poison_after = 2`` the first death is retried (the retry
    carries the count), the second is poison."""
    async with executor(isolation="process", processes=1, poison_after=2) as harness:
        first = job("tests.crash.retried", "segfault")
        await harness.assign(first)
        [died] = await harness.outcomes_of(first)
        await harness.dispatcher.until(lambda: bool(harness.dispatcher.of(Retry)))
        [retry] = harness.dispatcher.of(Retry)
        [again] = retry.jobs
        assert (again.id, again.attempt, again.losses) == (first.id, 2, 1)
        # The dispatcher's retry comes back; its outcome replaces the first.
        harness.results.messages.clear()
        await harness.assign(again)
        [poisoned] = await harness.outcomes_of(again)
    assert died.error is not None and died.error.type == "WorkerProcessDied"
    assert died.retry_in is not None
    assert poisoned.error is not None and poisoned.error.type == "PoisonTask"
    assert "died running it 2 times" in poisoned.error.message
    assert poisoned.retry_in is None and len(harness.dispatcher.of(Retry)) == 1


async def test_a_job_lost_before_counts_toward_poison() -> None:
    """A job a lost worker held once (``losses = 1``) is poison at its first
    death with ``poison_after = 2``."""
    async with executor(isolation="process", processes=1, poison_after=2) as harness:
        crash = attrs.evolve(job("tests.crash.retried", "exit"), losses=1)
        await harness.assign(crash)
        [outcome] = await harness.outcomes_of(crash)
    assert outcome.error is not None and outcome.error.type == "PoisonTask"



async def test_an_executor_cancelled_leaves_no_pool_process_running() -> None:
    """A crash of the node (its actors cancelled, no drain) kills the
    pool's idle processes with it, rather than leaving them to the end of
    the interpreter."""
    with trio.CancelScope() as scope:
        async with executor(isolation="process", processes=1) as harness:
            first = job("tests.sample.pid")
            await harness.assign(first)
            [outcome] = await harness.outcomes_of(first)
            exited = os.pidfd_open(value_of(outcome))  # readable once it has exited
            scope.cancel()
    try:
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(exited)
    finally:
        os.close(exited)
