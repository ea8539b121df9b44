"""Pipelined submissions (``Client.pipeline``, ``SyncClient.pipeline``),
and ``map`` larger than the store's bounds, against the shipped control
plane, in process: each refusal surfaces where the docs say, as
``SubmissionsRefused`` naming the id and why; every id the pipeline
returned was accepted or is named there, never dropped."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs
import pytest
import trio

from actors import Topology, open_node
from actors.pytest_plugin import free_tcp_ports
from examples import tasks
from fastworker import (
    Client,
    ConnectionLost,
    QueueFull,
    SubmissionsRefused,
    SyncClient,
    UnknownTask,
)
from fastworker.client.pipeline import SyncPipeline

GUARD = 20  # seconds; a hang fails the test instead of stalling the run


@asynccontextmanager
async def control_plane(*, max_entries: int | None = None, **environ: str
                        ) -> AsyncIterator[str]:
    """The shipped control plane on free ports (its store holding at most
    ``max_entries`` final records, if given); yields its address."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    topology = Topology.from_toml("config/control.toml", environ={
        "FASTWORKER_ADDRESS": address, "FASTWORKER_TASKS": "examples.tasks",
        "FASTWORKER_DISCOVERY_PORT": "0", "FASTWORKER_DASHBOARD": "off",
        "FASTWORKER_JOURNAL": "off", **environ})
    if max_entries is not None:
        for index, spec in enumerate(topology.actors):
            if spec.name == "results":
                topology.actors[index] = attrs.evolve(
                    spec, options={**spec.options, "max_entries": max_entries})
    async with open_node(topology):
        yield address


async def test_a_refused_submission_is_raised_at_the_end_naming_it() -> None:
    """An unknown task among good ones: the block's end raises
    SubmissionsRefused naming that id alone; the others ran."""
    async with control_plane() as address, Client(address) as client:
        with trio.fail_after(GUARD):
            with pytest.raises(SubmissionsRefused) as caught:
                async with client.pipeline() as pipe:
                    good = [await pipe.delay(tasks.add, n, 1) for n in range(50)]
                    bad = await pipe.delay("examples.tasks.nope")
                    good += [await pipe.delay(tasks.add, n, 2) for n in range(50)]
            assert list(caught.value.refused) == [bad]
            assert isinstance(caught.value.refused[bad], UnknownTask)
            assert "1 UnknownTask" in str(caught.value)
            values = await client.results(good)
    assert values == [n + 1 for n in range(50)] + [n + 2 for n in range(50)]


async def test_a_refusal_known_stops_the_next_delay_which_queues_nothing() -> None:
    """Once a refusal is in, the next delay raises it and queues nothing;
    after that the pipeline goes on, and each refusal is raised once."""
    async with control_plane() as address, Client(address) as client:
        with trio.fail_after(GUARD):
            # window=1: each delay waits for the answer before it, so the
            # refusal is known when the next delay comes.
            async with client.pipeline(window=1) as pipe:
                first = await pipe.delay(tasks.add, 1, 1)
                bad = await pipe.delay("examples.tasks.nope")
                with pytest.raises(SubmissionsRefused) as caught:
                    await pipe.delay(tasks.add, 2, 2)
                assert list(caught.value.refused) == [bad]
                after = await pipe.delay(tasks.add, 3, 3)
                assert pipe.unanswered <= 1
            assert await client.results([first, after]) == [2, 6]
            stats = await client.status(first)
    assert stats.state == "succeeded"


async def test_submissions_past_the_queue_are_refused_as_queue_full_and_none_lost() -> None:
    """A queue of 20 and no waiting for room: every id is either accepted
    (and runs) or named QueueFull in the refusal; none is missing."""
    async with control_plane(FASTWORKER_QUEUE_CAPACITY="20") as address, \
            Client(address, queue_wait=0) as client:
        with trio.fail_after(GUARD):
            ids: list[str] = []
            with pytest.raises(SubmissionsRefused) as caught:
                async with client.pipeline() as pipe:
                    for _ in range(300):
                        ids.append(await pipe.delay(tasks.nap, 0.2))
            refused = caught.value.refused
            assert refused and all(isinstance(e, QueueFull) for e in refused.values())
            accepted = [task_id for task_id in ids if task_id not in refused]
            assert accepted and set(refused) <= set(ids)
            records = [await client.status(task_id) for task_id in accepted]
            assert all(record.state != "unknown" for record in records)
            assert all(value >= 0.2 for value in await client.results(accepted))


async def test_a_control_plane_that_is_not_there_is_a_refusal_not_a_hang() -> None:
    """No control plane: the block's end raises SubmissionsRefused with
    ConnectionLost for every id, within the client's request_timeout."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    async with Client(address, request_timeout=0.5, queue_wait=0) as client:
        with trio.fail_after(GUARD):
            with pytest.raises(SubmissionsRefused) as caught:
                async with client.pipeline() as pipe:
                    ids = [await pipe.delay(tasks.add, n, n) for n in range(10)]
    assert sorted(caught.value.refused) == sorted(ids)
    assert all(isinstance(e, ConnectionLost) for e in caught.value.refused.values())


class _Lines(logging.Handler):
    """Keeps the client's log lines; ``logged`` is set at the first."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.logged = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.logged.set()


@contextmanager
def client_log() -> Iterator[_Lines]:
    """The client's WARNING lines while the block runs."""
    lines = _Lines()
    logger = logging.getLogger("fastworker.client")
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)


async def test_a_block_that_fails_still_sends_and_logs_what_was_refused() -> None:
    """The body raises: its error goes on unchanged; what it submitted is
    still sent, and a refusal among it is logged when its answer comes."""
    with client_log() as lines:
        async with control_plane() as address, Client(address) as client:
            with trio.fail_after(GUARD):
                with pytest.raises(KeyError):
                    async with client.pipeline() as pipe:
                        sent = await pipe.delay(tasks.add, 20, 22)
                        bad = await pipe.delay("examples.tasks.nope")
                        raise KeyError("the caller's own")
                assert await client.result(sent) == 42
                await lines.logged.wait()
    [line] = lines.lines
    assert bad in line and "unknown task 'examples.tasks.nope'" in line


async def test_a_pipeline_is_bounded_by_its_window() -> None:
    """At most ``window`` submissions wait for their answers at once."""
    async with control_plane() as address, Client(address) as client:
        with trio.fail_after(GUARD):
            async with client.pipeline(window=8) as pipe:
                for n in range(200):
                    await pipe.delay(tasks.add, n, n)
                    assert pipe.unanswered <= 8
            assert pipe.unanswered == 0
        with pytest.raises(ValueError, match="window must be a positive int, got 0"):
            client.pipeline(window=0)
        with pytest.raises(RuntimeError, match="the pipeline is closed"):
            await pipe.delay(tasks.add, 1, 1)


async def test_the_blocking_pipeline_sends_in_batches_and_raises_refusals() -> None:
    """SyncClient's pipeline: ids at once, a refusal at the block's end,
    the accepted ones run."""
    async with control_plane() as address:
        def blocking() -> tuple[list[str], str, SubmissionsRefused]:
            with SyncClient(address) as client:
                try:
                    with client.pipeline() as pipe:
                        good = [pipe.delay(tasks.add, n, n) for n in range(1200)]
                        bad = pipe.delay("examples.tasks.nope")
                except SubmissionsRefused as refused:
                    values = client.results(good, timeout=GUARD)
                    assert values == [2 * n for n in range(1200)]
                    return good, bad, refused
            raise AssertionError("the refusal was not raised")

        with trio.fail_after(GUARD):
            good, bad, refused = await trio.to_thread.run_sync(blocking)
    assert len(set(good)) == 1200 and bad not in good
    assert list(refused.refused) == [bad]


async def test_a_map_larger_than_the_stores_bounds_comes_back_whole() -> None:
    """A store that keeps 50 final records: a map of 2,000 tasks gets every
    result (each watched from before it is submitted, so kept until
    delivered; waiting only once all were accepted found the oldest evicted)."""
    async with control_plane(max_entries=50) as address, Client(address) as client:
        with trio.fail_after(GUARD):
            for _ in range(3):
                assert await client.map(tasks.add, [(n, n) for n in range(2000)]) == [
                    2 * n for n in range(2000)]


async def test_a_map_waiting_for_queue_room_is_not_taken_for_lost() -> None:
    """A map whose submissions wait for room longer than a poll: the ids
    the store does not know yet (not accepted) are not answered unknown."""
    async with control_plane(FASTWORKER_QUEUE_CAPACITY="2", FASTWORKER_CONCURRENCY="2",
                             FASTWORKER_PREFETCH="1", FASTWORKER_MIN_PREFETCH="1") as address, \
            Client(address, queue_wait=30, poll_wait=0.05) as client:
        with trio.fail_after(GUARD):
            naps = await client.map(tasks.nap, [0.1] * 12)
    assert len(naps) == 12 and all(nap >= 0.1 for nap in naps)


async def test_a_final_wait_that_is_cancelled_still_logs_refusals() -> None:
    """The block ends but its wait for the answers is cancelled: what it
    submitted still goes, and a refusal is logged when its answer comes."""
    with client_log() as lines:
        async with control_plane() as address, Client(address) as client:
            with trio.fail_after(GUARD):
                with trio.CancelScope() as scope:
                    async with client.pipeline() as pipe:
                        bad = await pipe.delay("examples.tasks.nope")
                        scope.cancel()  # the block ends; its wait is cancelled
                assert scope.cancelled_caught
                await lines.logged.wait()
    [line] = lines.lines
    assert bad in line and "unknown task" in line


def test_the_blocking_pipeline_raises_every_refusal_of_its_last_two_steps() -> None:
    """At the block's end, refusals found by the last hand-off and by the
    wait after it come out as one SubmissionsRefused naming them all."""
    first = SubmissionsRefused({"a": UnknownTask("unknown task 'x'")})
    second = SubmissionsRefused({"b": QueueFull("queue full")})

    class Steps:
        def hold(self, task_id: str) -> None:
            pass

        async def extend(self, submits: list[Any]) -> None:
            raise first

        async def __aexit__(self, *exc_info: Any) -> None:
            raise second

    def call(function: Any, *args: Any) -> Any:
        return trio.run(function, *args)

    pipe = SyncPipeline(call, Steps(), queue_wait=0.0, batch=100)  # type: ignore[arg-type]
    with pytest.raises(SubmissionsRefused) as caught:
        with pipe:
            pipe.delay(tasks.add, 1, 2)
    assert set(caught.value.refused) == {"a", "b"}
    assert "2 pipelined submission(s) refused (1 UnknownTask, 1 QueueFull)" in str(caught.value)


async def test_a_pipelined_id_waited_for_before_its_answer_is_not_taken_for_unknown() -> None:
    """A result waited for inside the block, before the submission's
    answer came (its Watch may reach the store first, on another port), is
    waited for, not reported as never submitted."""
    async with control_plane() as address, Client(address, poll_wait=3600) as client:
        with trio.fail_after(GUARD):
            async with client.pipeline() as pipe:
                for n in range(50):
                    task_id = await pipe.delay(tasks.add, n, 1)
                    assert await client.result(task_id) == n + 1


async def test_a_pipelined_id_waited_for_again_after_a_timeout_is_still_waited_for() -> None:
    """A result() that timed out on a pipelined id still waiting for room
    does not make the next one take it for never submitted."""
    async with control_plane(FASTWORKER_CONCURRENCY="1", FASTWORKER_PREFETCH="1",
                             FASTWORKER_MIN_PREFETCH="1", FASTWORKER_QUEUE_CAPACITY="1",
                             FASTWORKER_ISOLATION="thread") as address, \
            Client(address, poll_wait=3600, queue_wait=20) as client:
        with trio.fail_after(GUARD):
            for _ in range(4):  # running, prefetched, queued: the rest waits for room
                await client.send(tasks.nap, (0.5,), queue_wait=20)
            async with client.pipeline() as pipe:
                task_id = await pipe.delay(tasks.add, 1, 2)
                with pytest.raises(TimeoutError):
                    await client.result(task_id, timeout=0.1)
                assert await client.result(task_id) == 3


async def test_a_sync_pipeline_id_still_in_its_buffer_is_waited_for() -> None:
    """SyncClient.pipeline() returns ids while their submissions wait in
    the caller's buffer: result() of one waits (here until its timeout,
    the submission not sent yet), never taking it for unknown."""
    async with control_plane() as address:
        def blocking() -> Any:
            with SyncClient(address, poll_wait=3600) as client:
                with client.pipeline() as pipe:
                    task_id = pipe.delay(tasks.add, 20, 22)  # buffered, not handed over
                    with pytest.raises(TimeoutError):
                        client.result(task_id, timeout=0.5)
                return client.result(task_id, timeout=GUARD)

        with trio.fail_after(GUARD):
            assert await trio.to_thread.run_sync(blocking) == 42
