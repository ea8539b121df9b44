"""The process pool: real spawned processes, killed at a limit or a cancel.

Each test uses its pool as ``async with``, so its processes are stopped
even when it fails. A task that must say it has started connects to a TCP
listener of the test and sends its pid (``Reporter``): the test waits on
that, never on a sleep.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from fastworker.calls import Called
from fastworker.executor import ProcessPool
from fastworker.payload import pack_call, unpack_value
from fastworker.tasks import Task
from tests.fastworker import procpool_tasks as tasks

ROOT = Path(__file__).resolve().parents[2]

#: A program that leaves a pool with an idle process open when it exits.
LEFT_OPEN = """
import trio
from fastworker.payload import pack_call
from fastworker.executor import ProcessPool
from tests.fastworker import procpool_tasks

async def main():
    global pool
    pool = ProcessPool(1)
    await pool.run(procpool_tasks.pid, pack_call((), {}), None)

trio.run(main)
"""


def call(*args: Any, **kwargs: Any) -> bytes:
    return pack_call(args, kwargs)


def value(called: Called) -> Any:
    data, error, _ = called
    assert error is None, error
    assert data is not None
    return unpack_value(data)


def gone(pid: int) -> bool:
    """Whether no process has that pid any more (reaped, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def run_into(
    results: list[Called], pool: ProcessPool, task: Task[Any, Any], payload: bytes,
    limit: float | None,
) -> None:
    results.append(await pool.run(task, payload, limit))


class Reporter:
    """A TCP listener that tasks connect to, sending their pid; the
    connections are closed with it."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self.listener = listener
        self.port: int = listener.socket.getsockname()[1]
        self.streams: list[trio.SocketStream] = []

    async def accept(self) -> tuple[int, trio.SocketStream]:
        """The next task to report: its pid and its connection."""
        stream = await self.listener.accept()
        self.streams.append(stream)
        line = b""
        while not line.endswith(b"\n"):
            chunk = await stream.receive_some()
            assert chunk, "the task closed its connection before sending its pid"
            line += chunk
        return int(line), stream


@pytest.fixture
async def reporter() -> AsyncIterator[Reporter]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        reporter = Reporter(listeners[0])
        try:
            yield reporter
        finally:
            for stream in reporter.streams:
                await stream.aclose()


async def test_a_job_returns_its_value_from_another_process() -> None:
    async with ProcessPool(1) as pool:
        assert value(await pool.run(tasks.add, call(2, 3), None)) == 5
        pid = value(await pool.run(tasks.pid, call(), None))
        size = 5 * 1024 * 1024  # far more than a socket buffer holds
        assert value(await pool.run(tasks.big, call(size), None)) == b"x" * size
    assert pid != os.getpid()


async def test_a_process_is_reused_for_the_next_job() -> None:
    async with ProcessPool(2) as pool:
        first = value(await pool.run(tasks.pid, call(), None))
        second = value(await pool.run(tasks.pid, call(), None))
        assert first == second
        assert pool.stats().started_total == 1
        assert pool.stats().processes == 1


async def test_a_job_past_its_limit_is_killed_and_the_next_gets_a_new_process(
    reporter: Reporter,
) -> None:
    async with ProcessPool(1) as pool:
        result: list[Called] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_into, result, pool, tasks.spin, call(reporter.port), 0.5)
            pid, _ = await reporter.accept()
        data, error, retryable = result[0]
        assert data is None and error is not None
        assert (error.type, error.kind) == ("TaskTimeout", "timeout")
        assert "procpool_tests.spin" in error.message and "0.5 s" in error.message
        assert retryable is True
        assert gone(pid)
        assert pool.stats().killed_total == 1
        assert value(await pool.run(tasks.pid, call(), None)) != pid
        assert pool.stats().started_total == 2


async def test_cancelling_the_caller_kills_the_process(reporter: Reporter) -> None:
    async with ProcessPool(1) as pool:
        reached_the_end = False
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    nonlocal reached_the_end
                    await pool.run(tasks.sleep, call(reporter.port), None)
                    reached_the_end = True

                nursery.start_soon(run)
                pid, _ = await reporter.accept()
                scope.cancel()
        assert scope.cancelled_caught and not reached_the_end
        assert gone(pid)
        stats = pool.stats()
        assert (stats.killed_total, stats.died_total, stats.processes, stats.busy) == (1, 0, 0, 0)


async def test_an_exception_comes_back_as_text_with_the_retry_decision() -> None:
    async with ProcessPool(1) as pool:
        data, error, retryable = await pool.run(tasks.fail, call("bad input"), None)
        assert data is None and error is not None
        assert (error.type, error.message, error.kind) == ("ValueError", "bad input", "error")
        assert "in fail" in error.traceback and "ValueError: bad input" in error.traceback
        assert retryable is True
        _, error, retryable = await pool.run(tasks.fail_no_retry, call("again"), None)
        assert error is not None and error.type == "ValueError"
        assert retryable is False
        assert pool.stats().started_total == 1  # an exception does not cost the process


async def test_a_process_that_exits_fails_its_job_and_is_replaced() -> None:
    async with ProcessPool(1) as pool:
        first = value(await pool.run(tasks.pid, call(), None))
        data, error, retryable = await pool.run(tasks.exit_now, call(3), None)
        # Worth a retry, as any error of a task without retry_on (the
        # executor decides whether it is poison).
        assert data is None and error is not None and retryable is True
        assert error.type == "WorkerProcessDied"
        assert "exit code 3" in error.message and "procpool_tests.exit" in error.message
        assert gone(first)
        assert pool.stats().died_total == 1
        assert value(await pool.run(tasks.add, call(1, 1), None)) == 2
        assert pool.stats().started_total == 2


async def test_a_process_killed_from_outside_fails_its_job(reporter: Reporter) -> None:
    async with ProcessPool(1) as pool:
        result: list[Called] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_into, result, pool, tasks.sleep, call(reporter.port), None)
            pid, _ = await reporter.accept()
            os.kill(pid, signal.SIGKILL)
        _, error, _ = result[0]
        assert error is not None and error.type == "WorkerProcessDied"
        assert "killed by signal SIGKILL (9)" in error.message
        assert pool.stats().died_total == 1 and pool.stats().killed_total == 0


async def test_with_size_1_a_second_job_waits_for_the_first(reporter: Reporter) -> None:
    async with ProcessPool(1) as pool:
        results: list[Called] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_into, results, pool, tasks.held, call(reporter.port), None)
            pid, held = await reporter.accept()
            nursery.start_soon(run_into, results, pool, tasks.pid, call(), None)
            await trio.testing.wait_all_tasks_blocked()
            assert results == [] and pool.stats().busy == 1
            await held.send_all(b"go")
        assert [value(r) for r in results] == [pid, pid]
        assert pool.stats().started_total == 1


async def test_aclose_stops_idle_and_busy_processes(reporter: Reporter) -> None:
    pool = ProcessPool(2)
    try:
        raised: list[BaseException] = []
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                try:
                    await pool.run(tasks.sleep, call(reporter.port), None)
                except trio.ClosedResourceError as error:
                    raised.append(error)

            nursery.start_soon(run)
            busy, _ = await reporter.accept()
            idle = value(await pool.run(tasks.pid, call(), None))
            assert idle != busy
            await pool.aclose()
        assert [type(e) for e in raised] == [trio.ClosedResourceError]
        assert gone(idle) and gone(busy)
        stats = pool.stats()
        assert (stats.processes, stats.busy, stats.killed_total, stats.died_total) == (0, 0, 1, 0)
        with pytest.raises(trio.ClosedResourceError):
            await pool.run(tasks.pid, call(), None)
    finally:
        await pool.aclose()


async def test_an_importable_task_is_imported_there_and_others_are_sent_by_value() -> None:
    calls: list[int] = []

    def count_calls(x: int) -> int:
        calls.append(x)
        return len(calls)

    local: Task[Any, Any] = Task(name="procpool_tests.local", fn=count_calls, isolation="process")
    async with ProcessPool(1) as pool:
        # Its module's own function, imported in the process: not a copy.
        assert value(await pool.run(tasks.imported_here, call(), None)) is True
        # A closure cannot be imported: cloudpickle sends it, once (sent
        # again, it would come with a new empty list).
        assert value(await pool.run(local, call(2), None)) == 1
        assert value(await pool.run(local, call(3), None)) == 2
        assert calls == []




async def test_a_pool_left_open_does_not_hang_interpreter_exit() -> None:
    """Its idle process would wait for a job for ever, and multiprocessing
    joins every child at exit: the pool kills them first."""
    with trio.fail_after(20):
        done = await trio.run_process([sys.executable, "-c", LEFT_OPEN], cwd=ROOT, check=False)
    assert done.returncode == 0
