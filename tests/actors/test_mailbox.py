"""Mailboxes: bounded inboxes, refs, batch draining and calls."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import CallTimeout, open_mailbox
from actors.mailbox import Call


async def test_receive_batch_drains_what_is_queued() -> None:
    """One receive_batch returns everything already queued, in order, up to its max."""
    ref, inbox = open_mailbox(100)
    for n in range(10):
        ref.send_nowait(n)
    assert await inbox.receive_batch(4) == [0, 1, 2, 3]
    assert await inbox.receive_batch(100) == [4, 5, 6, 7, 8, 9]


async def test_full_mailbox_makes_the_sender_wait() -> None:
    """A sender waits while the mailbox is full and goes on once there is room."""
    ref, inbox = open_mailbox(2)
    sent: list[int] = []

    async def producer() -> None:
        for n in range(5):
            await ref.send(n)
            sent.append(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1]  # the third send waits
        assert inbox.stats().current_depth == 2
        received: list[int] = []
        while len(received) < 5:
            # A waiting sender's message takes a freed slot at once, so a
            # drain may pick it up; the order is kept either way.
            received += await inbox.receive_batch(10)
        assert received == [0, 1, 2, 3, 4]
    assert sent == [0, 1, 2, 3, 4]
    assert inbox.stats().peak_depth == 2


async def test_send_nowait_raises_would_block_when_full() -> None:
    """send_nowait never waits: a full mailbox raises trio.WouldBlock."""
    ref, _inbox = open_mailbox(1)
    ref.send_nowait("a")
    with pytest.raises(trio.WouldBlock):
        ref.send_nowait("b")


async def test_send_to_a_closed_mailbox_raises_broken_resource() -> None:
    """Once the actor has stopped for good, sends raise trio.BrokenResourceError."""
    ref, inbox = open_mailbox(4)
    inbox.close()
    with pytest.raises(trio.BrokenResourceError):
        await ref.send("late")


async def test_memory_stays_flat_under_a_slow_receiver() -> None:
    """However fast the sender, the mailbox never holds more than its capacity."""
    ref, inbox = open_mailbox(8)
    received = 0

    async def producer() -> None:
        await ref.send_batch(range(1000))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        while received < 1000:
            await trio.testing.wait_all_tasks_blocked()
            assert inbox.stats().current_depth <= 8
            received += len(await inbox.receive_batch(3))
    assert inbox.stats().peak_depth == 8


async def test_call_times_out_and_a_late_reply_is_discarded() -> None:
    """A call that is not answered in time raises CallTimeout; its late answer
    cannot be taken for the next call's."""
    ref, inbox = open_mailbox(4)
    with pytest.raises(CallTimeout, match="did not answer str within 0.01 s"):
        await ref.call("first", timeout=0.01)
    late: Call[str] = await inbox.receive()
    async with trio.open_nursery() as nursery:

        async def answer_second() -> None:
            second: Call[str] = await inbox.receive()
            late.reply.set("answer to first")  # arrives late: nobody reads it
            second.reply.set(f"answer to {second.message}")

        nursery.start_soon(answer_second)
        assert await ref.call("second", timeout=5) == "answer to second"


async def test_call_waits_for_room_within_its_timeout(autojump_clock: object) -> None:
    """The timeout of a call counts the wait for room in a full mailbox."""
    ref, _inbox = open_mailbox(1)
    ref.send_nowait("filler")
    start = trio.current_time()
    with pytest.raises(CallTimeout):
        await ref.call("request", timeout=3.0)
    assert trio.current_time() - start == pytest.approx(3.0)


def test_capacity_must_be_positive() -> None:
    """An unbuffered mailbox is refused: it would defeat batching."""
    with pytest.raises(ValueError, match="mailbox capacity must be at least 1, got 0"):
        open_mailbox(0)
