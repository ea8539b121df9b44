"""A rep wire's replies are bounded per connection: a peer that reads none
is dropped, the others are answered meanwhile, and nothing of it is kept.

The slow peers are hand-made req0 connections (a TCP socket with a tiny
receive buffer that is never read), so "does not read" is real, down to
the kernel. ``trio.fail_after`` only guards against a hang.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from actors.errors import PeerDropped
from actors.nng import NngWire, open_request_wire, open_wire

MAX = 1 << 20
BIG = 4 << 20  # a reply far beyond what the kernel buffers of one connection hold
GUARD = 20
REQ_HANDSHAKE = b"\x00SP\x00\x00\x30\x00\x00"


@contextlib.asynccontextmanager
async def rep_wire(**options: Any) -> AsyncIterator[NngWire]:
    wire = await open_wire("tcp://127.0.0.1:0", pattern="rep", mode="listen",
                           recv_max_size=MAX, contexts=16, **options)
    try:
        yield wire
    finally:
        await wire.aclose()


async def deaf_peer(wire: NngWire, requests: int) -> trio.socket.SocketType:
    """A req0 connection that sends ``requests`` requests and never reads."""
    port = int(wire.name.rpartition(":")[2])
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    out = REQ_HANDSHAKE
    for number in range(1, requests + 1):
        body = (0x80000000 | number).to_bytes(4, "big") + b"deaf"
        out += len(body).to_bytes(8, "big") + body
    await sock.send(out)
    return sock


async def closed_by_server(sock: trio.socket.SocketType) -> None:
    """Read (drain) until the server closes the connection."""
    with contextlib.suppress(ConnectionResetError):
        while await sock.recv(1 << 20):
            pass


# 1 MiB (the default): the third reply waits for room and runs out of time
# there; 64 MiB: it waits inside NNG, whose send timeout ends it.
@pytest.mark.parametrize("peer_reply_bytes", [1 << 20, 64 << 20])
async def test_a_peer_that_reads_nothing_is_dropped_and_others_are_answered(
    peer_reply_bytes: int,
) -> None:
    # Long enough for the normal client to be answered first on a busy machine.
    async with rep_wire(reply_timeout=3.0, peer_reply_bytes=peer_reply_bytes) as server:
        dropped: list[PeerDropped] = []
        replies_done = trio.Event()
        pending = [3]

        async def answer() -> None:
            received = await server.receive_frame()
            try:
                frame = b"x" * BIG if received.frame == b"deaf" else b"re:" + received.frame
                await server.send_frame(frame, to=received.reply_to)
            except PeerDropped as error:
                dropped.append(error)
            if received.frame == b"deaf":
                pending[0] -= 1
                if not pending[0]:
                    replies_done.set()

        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(answer)
                deaf = await deaf_peer(server, 3)
                deaf_port = deaf.getsockname()[1]
                client = await open_request_wire(server.name.rpartition(" ")[2],
                                                 recv_max_size=MAX)
                try:
                    # Answered while the deaf peer's replies are stuck, not after.
                    assert await client.request(b"hello") == b"re:hello"
                    assert not replies_done.is_set(), dropped
                    await replies_done.wait()
                    # All three replies ended: one found the peer too slow,
                    # the others went with its connection, and the server
                    # still answers.
                    assert len(dropped) == 1, dropped
                    message = str(dropped[0])
                    assert f"tcp://127.0.0.1:{deaf_port}" in message
                    assert "could not be sent within 3 s" in message
                    await closed_by_server(deaf)
                    assert await client.request(b"again") == b"re:again"
                finally:
                    deaf.close()
                    await client.aclose()
                nursery.cancel_scope.cancel()
        assert not server._rep._outputs  # type: ignore[union-attr]  # nothing kept per peer


async def test_a_reply_built_after_its_peer_was_dropped_is_dropped_at_once() -> None:
    """A request of a dropped peer answered only after the drop (its other
    replies all ended, so nothing is tracked for it any more) is neither
    sent into NNG to wait out a send timeout nor reported as a second
    drop: ``room`` says no, and a reply anyway goes nowhere at once."""
    async with rep_wire(reply_timeout=1.0) as server:
        with trio.fail_after(GUARD):
            deaf = await deaf_peer(server, 3)
            try:
                held = [await server.receive_frame() for _ in range(3)]
                dropped: list[PeerDropped] = []

                async def reply(received: Any) -> None:
                    try:
                        await server.send_frame(b"x" * BIG, to=received.reply_to)
                    except PeerDropped as error:
                        dropped.append(error)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reply, held[0])
                    nursery.start_soon(reply, held[1])
                assert len(dropped) == 1
                rep = server._rep
                assert rep is not None and not rep._outputs  # forgotten
                assert not await server.reply_room(held[2].reply_to)
                with trio.fail_after(0.5):  # not the 1 s send timeout
                    await reply(held[2])
                assert len(dropped) == 1
            finally:
                deaf.close()


async def test_replies_beyond_peer_reply_bytes_wait_outside_nng_and_lose_nothing() -> None:
    """A peer that reads late gets every reply, in the order NNG took them,
    while at most ``peer_reply_bytes`` of them waited inside NNG."""
    size = 6 << 20  # each far beyond what the kernel buffers of one connection hold
    async with rep_wire(peer_reply_bytes=size * 2, reply_timeout=60) as server:
        sent = 0
        all_sent = trio.Event()

        async def answer() -> None:
            nonlocal sent
            received = await server.receive_frame()
            await server.send_frame(b"y" * size, to=received.reply_to)
            sent += 1
            if sent == 6:
                all_sent.set()

        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(answer)
                peer = await deaf_peer(server, 6)
                rep = server._rep
                assert rep is not None
                # One reply is being written, two wait in NNG, three wait here.
                while sum(o.room.statistics().tasks_waiting for o in rep._outputs.values()
                          if o.room is not None) < 3:
                    await trio.sleep(0.01)  # polls the wire's state: nothing to wait on
                assert [o.queued for o in rep._outputs.values()] == [size * 2]
                assert not all_sent.is_set()
                # Now the peer reads: everything arrives.
                received = 0
                expected = 8 + 6 * (8 + 4 + size)
                while received < expected:
                    chunk = await peer.recv(1 << 20)
                    assert chunk, "the server closed the connection"
                    received += len(chunk)
                await all_sent.wait()
                peer.close()
                nursery.cancel_scope.cancel()
