"""Fairness keys end to end: a real control plane with one executor slot,
one key flooding it, and another key's task that does not wait for the flood."""

from __future__ import annotations

import trio

from examples.tasks import nap
from fastworker import Client
from tests.dashboard.harness import open_control

#: One async slot and no prefetch: a second (async) task waits in the queue.
ONE_SLOT = {"FASTWORKER_CONCURRENCY": "1", "FASTWORKER_PREFETCH": "0"}

FLOOD = 100


async def test_a_quiet_key_is_not_held_up_by_a_flooding_one() -> None:
    """100 tasks of 20 ms queued for one key, then one task of another key:
    the quiet task is done while nearly all of the flood still waits (first
    in first out, it would be last)."""
    async with open_control(environ=ONE_SLOT) as control:
        async with Client(control.address) as flooder, Client(control.address) as quiet:
            flood = await flooder.delay_many(nap, [(0.02,)] * FLOOD, fair_key="tenant-big")
            small = await quiet.send(nap, (0.0,), fair_key="tenant-small")
            with trio.fail_after(30):
                assert await quiet.result(small) < 1.0
            states = [(await flooder.status(task_id)).state for task_id in flood]
            done = states.count("succeeded")
            assert done < 10, states
            with trio.fail_after(60):
                await flooder.results(flood)
