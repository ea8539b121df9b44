"""An id the control plane has never seen is answered ``ResultUnknown`` at
once, not after a whole poll; ids the client has not yet heard accepted
are waited for. In process, against the shipped control plane."""

from __future__ import annotations

import pytest
import trio

from examples import tasks
from fastworker import Client, ResultUnknown
from tests.fastworker.test_pipeline import GUARD, control_plane


async def test_result_of_an_id_never_submitted_is_unknown_at_once() -> None:
    # A poll that waits an hour: only the at-once answer ends this in time.
    async with control_plane() as address, Client(address, poll_wait=3600) as client:
        with trio.fail_after(GUARD):
            with pytest.raises(ResultUnknown, match="has no record of task never-submitted"):
                await client.result("never-submitted")
            done = [await client.delay(tasks.add, n, 1) for n in range(3)]
            with pytest.raises(ResultUnknown, match="has no record of task bogus"):
                await client.results([*done, "bogus"])
            assert await client.results(done) == [1, 2, 3]


async def test_as_completed_reports_a_never_seen_id_among_real_ones() -> None:
    async with control_plane() as address, Client(address, poll_wait=3600) as client:
        with trio.fail_after(GUARD):
            real = await client.delay(tasks.add, 20, 22)
            seen = {}
            async for done in client.as_completed([real, "bogus"]):
                seen[done.id] = done
            assert seen[real].value == 42
            assert seen["bogus"].record.state == "unknown"
            with pytest.raises(ResultUnknown, match="has no record of task bogus"):
                seen["bogus"].result()


async def test_map_and_submit_are_not_taken_for_unknown() -> None:
    """map watches before it submits; submit sends its Watch with the
    submission: neither is reported as never seen."""
    async with control_plane() as address, Client(address, poll_wait=3600) as client:
        with trio.fail_after(GUARD):
            for _ in range(5):
                assert await client.map(tasks.add, [(n, n) for n in range(200)]) == [
                    2 * n for n in range(200)]
                assert await client.submit(tasks.add, 2, 3) == 5
