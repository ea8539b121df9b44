"""actors.nng over real NNG sockets, on loopback only.

Every wait is on the system (a frame arriving, a connection closing, tasks
blocking); ``trio.fail_after`` only guards against a hang. Request timeouts
run on the autojump clock, or are the behaviour under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import math
import re
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pynng  # type: ignore[import-untyped]
import pytest
import trio
import trio.testing

from actors import nng_rep
from actors.errors import ConfigError, NotConnected
from actors.nng import (
    NngWire,
    RequestWire,
    TlsOptions,
    check_listen_address,
    open_request_wire,
    open_wire,
)
from actors.pytest_plugin import free_tcp_port
from actors.wire import Received, Wire

MAX = 64 * 1024
GUARD = 10  # seconds; a hang fails the test instead of stalling the run
IO_MODES = ["poll", "async"]
# The SP handshake a push0 socket sends first: "\0SP\0", protocol 0x50, reserved.
PUSH_HANDSHAKE = b"\x00SP\x00\x00\x50\x00\x00"
# ... and a req0 socket's (protocol 0x30).
REQ_HANDSHAKE = b"\x00SP\x00\x00\x30\x00\x00"


@contextlib.asynccontextmanager
async def opened(address: str, **options: Any) -> AsyncIterator[NngWire]:
    options.setdefault("recv_max_size", MAX)
    wire = await open_wire(address, **options)
    try:
        yield wire
    finally:
        await wire.aclose()


@contextlib.asynccontextmanager
async def requesting(address: str, **options: Any) -> AsyncIterator[RequestWire]:
    options.setdefault("recv_max_size", MAX)
    wire = await open_request_wire(address, **options)
    try:
        yield wire
    finally:
        await wire.aclose()


class Held:
    """The requests a ``serve`` loop keeps unanswered; ``first`` is set at the first."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.first = trio.Event()

    def add(self, request: Received) -> None:
        self.requests.append(request)
        self.first.set()


async def serve(wire: Wire, held: Held | None = None) -> None:
    """Answer each request with b"re:" + it; keep those starting with b"hold" unanswered."""
    while True:
        received = await wire.receive_frame()
        if received.frame.startswith(b"hold"):
            assert held is not None
            held.add(received)
        else:
            await wire.send_frame(b"re:" + received.frame, to=received.reply_to)


def address_of(wire: NngWire) -> str:
    """The address a listener really bound ("listening on X" -> X)."""
    return wire.name.rpartition(" ")[2]


async def wait_closed_by_peer(stream: trio.SocketStream) -> None:
    """Read until the other end closes the connection."""
    with contextlib.suppress(trio.BrokenResourceError):
        while await stream.receive_some():
            pass


@pytest.mark.parametrize("io", IO_MODES)
async def test_push_pull_carries_frames_in_order(io: str) -> None:
    """Frames from a push dialer reach the pull listener whole and in order."""
    frames = [b"", b"x", bytes(range(256)) * 40, b"last"]
    async with opened("tcp://127.0.0.1:0", pattern="pull", mode="listen", io=io) as pull:
        async with opened(address_of(pull), pattern="push", mode="dial", io=io) as push:
            assert isinstance(pull, Wire)
            with trio.fail_after(GUARD):
                for frame in frames:
                    await push.send_frame(frame)
                got = [await pull.receive_frame() for _ in frames]
    assert [r.frame for r in got] == frames
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", got[0].peer)
    assert {r.reply_to for r in got} == {None}


@pytest.mark.parametrize("scheme", ["ipc", "inproc"])
async def test_local_transports_carry_frames(scheme: str, tmp_path: Path) -> None:
    """ipc and inproc wires work like tcp ones and name the peer by the address."""
    address = f"ipc://{tmp_path}/wire.sock" if scheme == "ipc" else f"inproc://{tmp_path.name}"
    async with opened(address, pattern="pair", mode="listen") as listener:
        assert listener.name == f"listening on {address}"
        async with opened(address, pattern="pair", mode="dial") as dialer:
            with trio.fail_after(GUARD):
                await dialer.send_frame(b"local")
                assert await listener.receive_frame() == Received(b"local", address)


@pytest.mark.parametrize("io", IO_MODES)
async def test_pair1_listener_answers_each_dialer_by_reply_to(io: str) -> None:
    """A pair1 listener's answer sent to reply_to reaches only the dialer that asked."""
    async with opened("tcp://127.0.0.1:0", pattern="pair1", mode="listen", io=io) as server:
        address = address_of(server)
        async with opened(address, pattern="pair1", mode="dial", io=io) as a, opened(
            address, pattern="pair1", mode="dial", io=io
        ) as b:
            with trio.fail_after(GUARD):
                await a.send_frame(b"from a")
                await b.send_frame(b"from b")
                for _ in range(2):
                    request = await server.receive_frame()
                    assert request.reply_to is not None
                    await server.send_frame(b"re: " + request.frame, to=request.reply_to)
                assert (await a.receive_frame()).frame == b"re: from a"
                assert (await b.receive_frame()).frame == b"re: from b"


async def test_name_shows_the_real_port() -> None:
    """A listener on port 0 names the port it got; a dialer names its target."""
    async with opened("tcp://127.0.0.1:0", pattern="pull", mode="listen") as pull:
        match = re.fullmatch(r"listening on tcp://127\.0\.0\.1:(\d+)", pull.name)
        assert match is not None and int(match[1]) > 0
        async with opened(address_of(pull), pattern="push", mode="dial") as push:
            assert push.name == f"dialing tcp://127.0.0.1:{match[1]}"


@pytest.mark.parametrize("pattern", ["pull", "pair1"])
async def test_frame_of_exactly_recv_max_size_is_delivered(pattern: str) -> None:
    """recv_max_size counts frame bytes only, whatever header the pattern adds."""
    sender = "push" if pattern == "pull" else "pair1"
    async with opened("tcp://127.0.0.1:0", pattern=pattern, mode="listen", recv_max_size=100) as rx:
        async with opened(address_of(rx), pattern=sender, mode="dial") as tx:
            with trio.fail_after(GUARD):
                await tx.send_frame(b"m" * 100)
                assert (await rx.receive_frame()).frame == b"m" * 100


async def test_oversized_frame_is_dropped_and_listener_keeps_working() -> None:
    """A frame beyond recv_max_size is not delivered; the peer is cut, the listener serves on."""
    loopback = "tcp://127.0.0.1:0"
    async with opened(loopback, pattern="pull", mode="listen", recv_max_size=100) as pull:
        port = int(address_of(pull).rpartition(":")[2])
        with trio.fail_after(GUARD):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                # A well-formed frame first, to show the hand-made peer speaks SP.
                await stream.send_all(PUSH_HANDSHAKE + (5).to_bytes(8, "big") + b"small")
                assert (await pull.receive_frame()).frame == b"small"
                await stream.send_all((101).to_bytes(8, "big") + b"o" * 101)
                await wait_closed_by_peer(stream)
            async with opened(address_of(pull), pattern="push", mode="dial") as push:
                await push.send_frame(b"next good frame")
                assert (await pull.receive_frame()).frame == b"next good frame"


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        bytes(range(255, 0, -1)),
        b"\x00SP\x00\xff\xff\x00\x00",  # handshake naming an unknown protocol
    ],
    ids=["http", "random_bytes", "wrong_protocol"],
)
async def test_garbage_bytes_do_not_break_the_listener(garbage: bytes) -> None:
    """A connection sending junk is closed; the next real peer is served."""
    async with opened("tcp://127.0.0.1:0", pattern="pull", mode="listen") as pull:
        port = int(address_of(pull).rpartition(":")[2])
        with trio.fail_after(GUARD):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(garbage)
                await wait_closed_by_peer(stream)
            async with opened(address_of(pull), pattern="push", mode="dial") as push:
                await push.send_frame(b"still here")
                assert (await pull.receive_frame()).frame == b"still here"


async def test_dialing_before_the_listener_exists_then_connects() -> None:
    """A dialer opens with no peer; its pending send goes through once one listens."""
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    address = "tcp://127.0.0.1:%d" % probe.getsockname()[1]
    probe.close()
    async with opened(address, pattern="push", mode="dial") as push:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(push.send_frame, b"early")
            await trio.testing.wait_all_tasks_blocked()
            async with opened(address, pattern="pull", mode="listen") as pull:
                with trio.fail_after(GUARD):
                    assert (await pull.receive_frame()).frame == b"early"


@pytest.mark.parametrize("io", IO_MODES)
async def test_close_wakes_blocked_receiver_and_sender(io: str) -> None:
    """aclose wakes tasks waiting to receive or send with ClosedResourceError."""
    pair = await open_wire(
        "tcp://127.0.0.1:0",
        pattern="pair",
        mode="listen",
        recv_max_size=MAX,
        io=io,
        buffer_frames=0,  # so a send waits for a peer
    )
    woken: list[str] = []

    async def receive() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await pair.receive_frame()
        woken.append("receiver")

    async def send() -> None:  # no peer: the send waits
        with pytest.raises(trio.ClosedResourceError):
            await pair.send_frame(b"nobody listens")
        woken.append("sender")

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            await pair.aclose()
    assert sorted(woken) == ["receiver", "sender"]
    with pytest.raises(trio.ClosedResourceError):
        await pair.receive_frame()
    with pytest.raises(trio.ClosedResourceError):
        await pair.send_frame(b"late")
    await pair.aclose()  # a second close is harmless


async def test_cancelled_receive_loses_no_frame_and_receivers_may_share() -> None:
    """A cancelled receive leaves the frame for the next; two receivers wait at once."""
    async with opened("tcp://127.0.0.1:0", pattern="pull", mode="listen") as pull:
        async with opened(address_of(pull), pattern="push", mode="dial") as push:
            with trio.CancelScope() as scope:
                scope.cancel()
                await pull.receive_frame()
            got: list[Received] = []

            async def receive() -> None:
                got.append(await pull.receive_frame())

            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receive)
                    nursery.start_soon(receive)
                    await trio.testing.wait_all_tasks_blocked()
                    await push.send_frame(b"one")
                    await push.send_frame(b"two")
    assert sorted(r.frame for r in got) == [b"one", b"two"]


# --- request/reply -----------------------------------------------------------


async def test_rep_answers_each_client_its_own_replies() -> None:
    """Two clients with many requests in flight each get the reply to each request."""
    peers: set[str] = set()

    async def serve_noting_peers(wire: NngWire) -> None:
        while True:
            received = await wire.receive_frame()
            peers.add(received.peer)
            await wire.send_frame(b"re:" + received.frame, to=received.reply_to)

    async def ask(client: RequestWire, name: bytes, replies: dict[bytes, bytes]) -> None:
        async def one(i: int) -> None:
            frame = b"%s-%d" % (name, i)
            replies[frame] = await client.request(frame)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)

    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen", contexts=8) as server:
        async with requesting(address_of(server)) as a, requesting(address_of(server)) as b:
            replies: dict[bytes, bytes] = {}
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    for _ in range(8):
                        nursery.start_soon(serve_noting_peers, server)
                    async with trio.open_nursery() as clients:
                        clients.start_soon(ask, a, b"a", replies)
                        clients.start_soon(ask, b, b"b", replies)
                    nursery.cancel_scope.cancel()
    assert len(replies) == 100
    assert all(reply == b"re:" + frame for frame, reply in replies.items())
    assert len(peers) == 2 and all(re.fullmatch(r"tcp://127\.0\.0\.1:\d+", p) for p in peers)
    assert a.name == f"dialing {address_of(server)}"


async def test_requests_in_flight_are_received_at_once() -> None:
    """With K contexts each end, K requests are all received before any is answered."""
    k = 6
    received = 0
    all_in = trio.Event()

    async def answer_once_all_are_in(wire: NngWire) -> None:
        nonlocal received
        request = await wire.receive_frame()
        received += 1
        if received == k:
            all_in.set()
        await all_in.wait()
        await wire.send_frame(request.frame, to=request.reply_to)

    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen", contexts=k) as server:
        async with requesting(address_of(server), contexts=k) as client:
            replies: list[bytes] = []

            async def ask(i: int) -> None:
                replies.append(await client.request(b"%d" % i))

            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    for _ in range(k):
                        nursery.start_soon(answer_once_all_are_in, server)
                    for i in range(k):
                        nursery.start_soon(ask, i)
    assert sorted(replies) == sorted(b"%d" % i for i in range(k))


async def test_request_times_out_with_the_builtin_timeout_error(
    free_port: int, autojump_clock: object
) -> None:
    """No server: TimeoutError after the timeout, naming the wire; the context is freed."""
    async with requesting(f"tcp://127.0.0.1:{free_port}", contexts=1) as client:
        no_reply = r"^dialing tcp://127\.0\.0\.1:\d+: no reply within 5 s$"
        with pytest.raises(TimeoutError, match=no_reply):
            await client.request(b"anyone?", timeout=5)
        with pytest.raises(TimeoutError):  # the one context was given back
            await client.request(b"anyone?", timeout=5)


async def test_cancelled_request_frees_its_context_and_its_late_reply_is_dropped() -> None:
    """A request cancelled while the server holds it frees its context for
    the next; answered later, its reply is never taken for the next ones."""
    held = Held()
    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen", contexts=2) as server:
        async with requesting(address_of(server), contexts=1) as client:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve, server, held)
                    async with trio.open_nursery() as asking:
                        asking.start_soon(client.request, b"hold me")
                        await held.first.wait()
                        asking.cancel_scope.cancel()
                    assert await client.request(b"next") == b"re:next"
                    await server.send_frame(b"late", to=held.requests[0].reply_to)
                    for n in range(3):
                        assert await client.request(b"next %d" % n) == b"re:next %d" % n
                    nursery.cancel_scope.cancel()
    assert [r.frame for r in held.requests] == [b"hold me"]


async def test_a_request_given_up_is_ended_inside_nng_not_resent() -> None:
    """A request on the socket's own lane that times out is ended inside
    NNG at once (else NNG would resend it every resend_time): the socket
    holds no request any more."""
    held = Held()
    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen") as server:
        async with requesting(address_of(server), resend_time=0.05) as client:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve, server, held)
                    with pytest.raises(TimeoutError):
                        await client.request(b"hold me", timeout=0.2)
                    with pytest.raises(pynng.BadState):  # no request in flight on it
                        client._socket.recv(block=False)
                    assert await client.request(b"next") == b"re:next"
                    nursery.cancel_scope.cancel()


async def test_a_readable_descriptor_with_nothing_to_take_does_not_spin() -> None:
    """NNG leaves the rep socket's descriptor readable when the server
    closes the connection of a request that waits for a context; a
    receiver then waits, it does not spin."""
    taken = 0
    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen", contexts=1) as server:
        address = address_of(server)
        rep = server._rep
        assert rep is not None
        original = nng_rep.try_receive

        def counting(socket: Any, context: Any) -> Any:
            nonlocal taken
            taken += 1
            return original(socket, context)

        async with requesting(address) as first:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(first.request, b"one")
                    request = await server.receive_frame()  # the one context is taken
                    second = await open_request_wire(address, recv_max_size=MAX)

                    async def two() -> None:
                        with contextlib.suppress(anyio.ClosedResourceError):  # closed below
                            await second.request(b"two")

                    nursery.start_soon(two)
                    await trio.lowlevel.wait_readable(rep._recv_fd)  # "two" waits for one
                    gone = trio.Event()
                    token = trio.lowlevel.current_trio_token()
                    server._socket.add_post_pipe_remove_cb(
                        lambda pipe: token.run_sync_soon(gone.set))
                    # The server closes the connection "two" waits on (as it
                    # drops a slow peer): NNG leaves the descriptor readable.
                    [pipe] = [p for p in server._socket.pipes
                              if p.id != request.reply_to.pipe.id]
                    pipe.close()
                    await gone.wait()
                    await server.send_frame(b"", to=request.reply_to)
                    nng_rep.try_receive = counting
                    try:
                        nursery.start_soon(server.receive_frame)
                        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                    finally:
                        nng_rep.try_receive = original
                    nursery.cancel_scope.cancel()
    assert taken <= 2


async def test_replies_that_wait_behind_each_other_all_arrive() -> None:
    """Many large replies to one connection at once: NNG writes one at a
    time, so most wait for the one before; each comes to its request."""
    size, count = 256 * 1024, 12
    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen", contexts=count,
                      recv_max_size=2 * size) as server:
        async with requesting(address_of(server), contexts=count,
                              recv_max_size=2 * size) as client:
            replies: dict[int, bytes] = {}
            received: list[Received] = []
            all_in = trio.Event()

            async def ask(i: int) -> None:
                replies[i] = await client.request(b"%d" % i)

            async def take() -> None:
                received.append(await server.receive_frame())
                if len(received) == count:
                    all_in.set()

            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    for i in range(count):
                        nursery.start_soon(take)
                        nursery.start_soon(ask, i)
                    await all_in.wait()
                    async with trio.open_nursery() as answering:
                        for request in received:
                            reply = request.frame + b":" + request.frame * size
                            answering.start_soon(
                                functools.partial(server.send_frame, reply[:size],
                                                  to=request.reply_to))
    assert sorted(replies) == list(range(count))
    for i, reply in replies.items():
        assert reply.startswith(b"%d:%d" % (i, i)) and len(reply) == size


async def test_restarted_server_answers_the_request_in_flight(loopback_address: str) -> None:
    """A request held by a server that closes is sent again to its successor as
    soon as the client reconnects, with no resend timer at all."""
    held = Held()
    async with requesting(loopback_address, resend_time=math.inf) as client:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                replies: list[bytes] = []

                async def ask() -> None:
                    replies.append(await client.request(b"hold, then work"))

                nursery.start_soon(ask)
                async with opened(loopback_address, pattern="rep", mode="listen") as first:
                    async with trio.open_nursery() as serving:
                        serving.start_soon(serve, first, held)
                        await held.first.wait()
                        serving.cancel_scope.cancel()
                async with opened(loopback_address, pattern="rep", mode="listen") as second:
                    request = await second.receive_frame()
                    await second.send_frame(b"done: " + request.frame, to=request.reply_to)
    assert request.frame == held.requests[0].frame
    assert replies == [b"done: hold, then work"]


class TestConnectTimeout:
    """Until a wire has first connected, a request waits ``connect_timeout``
    for a server, not its whole timeout; once connected, a server that goes
    away is waited for (a restart is ridden through)."""

    async def test_nothing_listening_is_not_connected_within_the_connect_timeout(
            self, loopback_address: str) -> None:
        async with requesting(loopback_address, connect_timeout=0.2, contexts=3) as client:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    caught: list[BaseException] = []

                    async def ask(frame: bytes) -> None:
                        try:
                            await client.request(frame, timeout=GUARD * 10)
                        except NotConnected as error:
                            caught.append(error)

                    # The first on the socket itself, the others on contexts.
                    for index in range(3):
                        nursery.start_soon(ask, b"%d" % index)
            assert len(caught) == 3 and not client.connected
            assert all(isinstance(error, TimeoutError) for error in caught)
            assert "nothing accepted a connection within 0.2 s" in str(caught[0])
            # Nothing was sent: the first server to come gets new requests only.
            async with opened(loopback_address, pattern="rep", mode="listen") as server:
                received: list[bytes] = []

                async def serve_all() -> None:
                    while True:
                        request = await server.receive_frame()
                        received.append(request.frame)
                        await server.send_frame(b"re:" + request.frame, to=request.reply_to)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve_all)
                    with trio.fail_after(GUARD):
                        while True:  # until NNG's next dial, a request is not sent
                            try:
                                assert await client.request(b"later", timeout=GUARD) == b"re:later"
                                break
                            except NotConnected:
                                continue
                    nursery.cancel_scope.cancel()
            assert received == [b"later"] and client.connected

    async def test_the_connect_timeout_counts_from_each_call_not_from_its_turn(
            self, loopback_address: str) -> None:
        """More calls than contexts: those that wait for a context (or for
        the socket) are not given a connect_timeout of their own after it,
        so all end together, not a connect_timeout apart (4 turns here)."""
        async with requesting(loopback_address, connect_timeout=1.0, contexts=2) as client:
            ended: list[float] = []

            async def ask(index: int) -> None:
                with pytest.raises(NotConnected):
                    await client.request(b"%d" % index, timeout=60)
                ended.append(trio.current_time())

            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    for index in range(8):
                        nursery.start_soon(ask, index)
        assert len(ended) == 8 and max(ended) - min(ended) < 1.0

    async def test_a_server_that_goes_away_after_connecting_is_waited_for(
            self, loopback_address: str) -> None:
        async with requesting(loopback_address, connect_timeout=0.1) as client:
            async with opened(loopback_address, pattern="rep", mode="listen") as server:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve, server)
                    assert await client.request(b"first", timeout=GUARD) == b"re:first"
                    nursery.cancel_scope.cancel()
            # Gone now: the request waits its own timeout, past connect_timeout.
            with pytest.raises(TimeoutError) as caught:
                await client.request(b"second", timeout=0.5)
            assert not isinstance(caught.value, NotConnected)
            assert "no reply within 0.5 s" in str(caught.value)


async def test_request_dropped_by_a_live_server_is_resent_after_resend_time() -> None:
    """The resend timer recovers a request the server lost on a connection that stays up."""
    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen") as server:
        async with requesting(address_of(server), resend_time=0.05) as client:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    replies: list[bytes] = []

                    async def ask() -> None:
                        replies.append(await client.request(b"again"))

                    nursery.start_soon(ask)
                    lost = await server.receive_frame()
                    await server.discard(lost.reply_to)
                    again = await server.receive_frame()
                    assert again.frame == lost.frame and again.peer == lost.peer
                    await server.send_frame(b"got it", to=again.reply_to)
    assert replies == [b"got it"]


@pytest.mark.parametrize("how", ["discard", "garbage_collected"])
async def test_unanswered_request_gives_its_context_back(how: str) -> None:
    """With one context, a request that is discarded, or whose Received is
    dropped unanswered, no longer blocks the next."""
    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen", contexts=1) as server:
        async with requesting(address_of(server), resend_time=math.inf) as client:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.request, b"one")
                    nursery.start_soon(client.request, b"two")
                    first = await server.receive_frame()
                    if how == "discard":
                        await server.discard(first.reply_to)
                    else:
                        del first
                        gc.collect()
                    second = await server.receive_frame()
                    await server.send_frame(b"", to=second.reply_to)
                    nursery.cancel_scope.cancel()


async def test_rep_reply_needs_an_unanswered_request_of_this_wire() -> None:
    """A rep wire answers with to=, once per request; anything else is a ConfigError."""
    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen") as server:
        async with requesting(address_of(server)) as client:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.request, b"x")
                    request = await server.receive_frame()
                    not_a_request = "to= takes the reply_to of a request"
                    for wrong in [None, "somebody", Received(b"", "")]:
                        with pytest.raises(ConfigError, match=not_a_request):
                            await server.send_frame(b"y", to=wrong)
                    await server.send_frame(b"y", to=request.reply_to)
                    with pytest.raises(ConfigError, match="not answered yet"):
                        await server.send_frame(b"y", to=request.reply_to)
                    with pytest.raises(ConfigError, match="not answered yet"):
                        await server.discard(request.reply_to)
        async with opened("tcp://127.0.0.1:0", pattern="pull", mode="listen") as pull:
            with pytest.raises(ConfigError, match="only a rep wire can discard"):
                await pull.discard(request.reply_to)


async def test_request_and_reply_of_exactly_recv_max_size_are_delivered() -> None:
    """recv_max_size counts frame bytes only, not NNG's request id, both ways."""
    async with opened(
        "tcp://127.0.0.1:0", pattern="rep", mode="listen", recv_max_size=100
    ) as server:
        async with requesting(address_of(server), recv_max_size=100) as client:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve, server)
                    assert await client.request(b"q" * 97) == b"re:" + b"q" * 97
                    nursery.cancel_scope.cancel()


async def test_oversized_request_is_dropped_and_rep_keeps_serving() -> None:
    """A request beyond recv_max_size cuts that connection; other clients are served."""
    async with opened(
        "tcp://127.0.0.1:0", pattern="rep", mode="listen", recv_max_size=100
    ) as server:
        port = int(address_of(server).rpartition(":")[2])
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, server)
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    # A well-formed request first: the hand-made peer speaks req0.
                    request_id = b"\x80\x00\x00\x01"
                    await stream.send_all(REQ_HANDSHAKE + (104).to_bytes(8, "big") + request_id)
                    await stream.send_all(b"s" * 100)
                    reply = b""
                    while len(reply) < 8 + 8 + 4 + 103:  # handshake, length, id, body
                        chunk = await stream.receive_some()
                        assert chunk, "the server closed the connection"
                        reply += chunk
                    assert reply[:8] == REQ_HANDSHAKE[:5] + b"\x31\x00\x00"  # rep0 answers
                    assert reply[8:] == (107).to_bytes(8, "big") + request_id + b"re:" + b"s" * 100
                    await stream.send_all((105).to_bytes(8, "big") + request_id + b"o" * 101)
                    await wait_closed_by_peer(stream)
                async with requesting(address_of(server)) as client:
                    assert await client.request(b"next") == b"re:next"
                nursery.cancel_scope.cancel()


async def test_oversized_reply_is_dropped_and_the_request_resent() -> None:
    """A reply beyond the client's recv_max_size cuts its connection; NNG
    resends the request on reconnect, for as long as the request lasts."""
    seen: list[bytes] = []
    resent = trio.Event()

    async def answer_too_much(wire: NngWire) -> None:
        while True:
            received = await wire.receive_frame()
            seen.append(received.frame)
            if seen.count(b"big") == 2:
                resent.set()
            reply = b"r" * 101 if received.frame == b"big" else b"r" * 100
            await wire.send_frame(reply, to=received.reply_to)

    async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen") as server:
        async with requesting(address_of(server), recv_max_size=100) as client:
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(answer_too_much, server)
                    async with trio.open_nursery() as asking:
                        asking.start_soon(client.request, b"big")
                        await resent.wait()  # dropped, reconnected, sent again
                        asking.cancel_scope.cancel()
                    assert await client.request(b"small") == b"r" * 100
                    nursery.cancel_scope.cancel()


async def test_close_wakes_waiting_requests_and_receivers() -> None:
    """aclose wakes requests (anyio.ClosedResourceError) and receivers (trio's),
    including those waiting for a free context."""
    woken: list[str] = []
    server = await open_wire(
        "tcp://127.0.0.1:0", pattern="rep", mode="listen", recv_max_size=MAX, contexts=1
    )
    # Not the server's client: its requests would be received.
    nobody = f"tcp://127.0.0.1:{free_tcp_port()}"
    client = await open_request_wire(nobody, recv_max_size=MAX, contexts=1)

    async def receive() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_frame()
        woken.append("receiver")

    async def request() -> None:
        with pytest.raises(anyio.ClosedResourceError):
            await client.request(b"nobody answers")
        woken.append("request")

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            for _ in range(2):  # the second of each waits for the one context
                nursery.start_soon(receive)
                nursery.start_soon(request)
            await trio.testing.wait_all_tasks_blocked()
            await server.aclose()
            await client.aclose()
    assert sorted(woken) == ["receiver"] * 2 + ["request"] * 2
    with pytest.raises(anyio.ClosedResourceError):
        await client.request(b"late")
    await client.aclose()  # a second close is harmless


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
async def test_requests_timing_out_while_sending_leak_no_frames(
    free_port: int, autojump_clock: object
) -> None:
    """pynng leaks the frame of a cancelled send; the request wire takes it back."""

    def resident_mb() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 / 1e6

    async with requesting(f"tcp://127.0.0.1:{free_port}", contexts=1) as client:
        frame = b"x" * (1 << 20)
        before = resident_mb()
        for _ in range(200):  # no server: each send waits for one, and times out
            with pytest.raises(TimeoutError):
                await client.request(frame, timeout=1)
        assert resident_mb() - before < 50  # leaking would add 200 MB


# --- the client under asyncio --------------------------------------------------


@contextlib.contextmanager
def trio_server_thread() -> Iterator[str]:
    """A rep server answering as ``serve`` does, run by trio in a thread; yields its address."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        async with opened("tcp://127.0.0.1:0", pattern="rep", mode="listen") as server:
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(serve, server, Held())
                state.update(
                    address=address_of(server),
                    scope=nursery.cancel_scope,
                    token=trio.lowlevel.current_trio_token(),
                )
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), name="rep server")
    thread.start()
    try:
        assert ready.wait(GUARD), "the server thread did not start"
        yield state["address"]
    finally:
        if "token" in state:
            trio.from_thread.run_sync(state["scope"].cancel, trio_token=state["token"])
        thread.join(GUARD)
        assert not thread.is_alive()


def test_request_wire_works_under_asyncio() -> None:
    """The client runs under asyncio: concurrent requests, a timeout, a close."""

    async def client_main(address: str) -> None:
        client = await open_request_wire(address, recv_max_size=MAX, contexts=4)
        try:
            frames = [b"asyncio %d" % i for i in range(20)]
            replies = await asyncio.wait_for(
                asyncio.gather(*(client.request(f) for f in frames)), GUARD
            )
            assert replies == [b"re:" + f for f in frames]
            with pytest.raises(TimeoutError, match="no reply within 0.2 s"):
                await client.request(b"hold this", timeout=0.2)
            with pytest.raises(TimeoutError):  # asyncio's own cancellation
                await asyncio.wait_for(client.request(b"hold that"), 0.2)
            assert await client.request(b"after", timeout=GUARD) == b"re:after"
            # A request waiting for its reply when the wire closes is woken.
            waiting = asyncio.ensure_future(client.request(b"hold until closed"))
            await asyncio.sleep(0)  # one turn of the loop: it is sent, and waits
        finally:
            await client.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await asyncio.wait_for(waiting, GUARD)
        with pytest.raises(anyio.ClosedResourceError):
            await client.request(b"closed")

    with trio_server_thread() as address:
        asyncio.run(client_main(address))


class TestRequestWireOptions:
    @pytest.mark.parametrize(
        ("options", "problem"),
        [
            ({"recv_max_size": 0}, "recv_max_size must be a positive int, got 0"),
            ({"contexts": 0}, "contexts must be within 1..4096, got 0"),
            ({"contexts": 5000}, "contexts must be within 1..4096, got 5000"),
            ({"resend_time": 0}, "resend_time must be positive seconds or math.inf, got 0"),
            ({"connect_timeout": 0}, "connect_timeout must be positive seconds or None, got 0"),
            (
                {"resend_time": math.nan},
                "resend_time must be positive seconds or math.inf, got nan",
            ),
            (
                {"tls": TlsOptions(ca_file="ca.pem")},
                "TLS settings are given but the address is not tls+tcp://: refusing to dial "
                "without TLS (use the tls+tcp:// address, or unset the TLS settings)",
            ),
        ],
    )
    async def test_bad_options_are_config_errors(
        self, options: dict[str, Any], problem: str
    ) -> None:
        """Each wrong option is one readable problem naming the address."""
        arguments: dict[str, Any] = {"recv_max_size": MAX, **options}
        with pytest.raises(ConfigError) as caught:
            await open_request_wire("tcp://127.0.0.1:5555", **arguments)
        assert caught.value.problems == (f"tcp://127.0.0.1:5555: {problem}",)

    async def test_tls_dialer_needs_a_ca(self) -> None:
        """As with open_wire, a TLS client must be able to verify the server."""
        with pytest.raises(ConfigError, match="a TLS dialer needs ca_file"):
            await open_request_wire(
                "tls+tcp://127.0.0.1:5555", recv_max_size=MAX, tls=TlsOptions(server_name="x")
            )


class TestCheckListenAddress:
    @pytest.mark.parametrize(
        "address",
        [
            "tcp://127.0.0.1:5555",
            "tcp://127.8.9.10:5555",
            "tcp://[::1]:5555",
            "tcp://localhost:5555",
            "ipc:///tmp/fastworker.sock",
            "inproc://control",
        ],
    )
    def test_local_addresses_need_no_secret(self, address: str) -> None:
        """Loopback, ipc and inproc listeners are allowed without a secret."""
        check_listen_address(address, secured=False)

    @pytest.mark.parametrize(
        "address",
        [
            "tcp://0.0.0.0:5555",
            "tcp://*:5555",
            "tcp://:5555",
            "tcp://[::]:5555",
            "tcp://192.168.1.10:5555",
            "tcp://example.com:5555",
        ],
    )
    def test_other_addresses_need_a_secret(self, address: str) -> None:
        """Anything else is refused unsecured and allowed secured."""
        with pytest.raises(ConfigError, match="^refusing to listen on"):
            check_listen_address(address, secured=False)
        check_listen_address(address, secured=True)

    def test_refusal_says_how_to_fix_it(self) -> None:
        """The message names the address and the three ways out."""
        with pytest.raises(ConfigError) as caught:
            check_listen_address("tcp://0.0.0.0:5555", secured=False)
        assert str(caught.value) == (
            "refusing to listen on tcp://0.0.0.0:5555 without a shared secret or mutual TLS: "
            "set a secret (FASTWORKER_SECRET, or the edge's `secret` / `secret_file` option), "
            "use mutual TLS (a tls+tcp:// address with a client CA: FASTWORKER_TLS_CA, or the "
            "edge's `tls.ca_file`), or listen on a loopback address such as tcp://127.0.0.1:5555"
        )

    async def test_open_wire_refuses_before_binding(self) -> None:
        """open_wire applies the rule in listen mode."""
        with pytest.raises(ConfigError, match="^refusing to listen on tcp://0.0.0.0:0 "):
            await open_wire("tcp://0.0.0.0:0", pattern="pull", mode="listen", recv_max_size=MAX)


class TestOptions:
    @pytest.mark.parametrize(
        ("options", "problem"),
        [
            (
                {"pattern": "req"},
                "unknown pattern 'req'; expected one of bus, pair, pair1, pull, push, rep",
            ),
            ({"mode": "bind"}, "unknown mode 'bind'; expected one of dial, listen"),
            ({"io": "threads"}, "unknown io 'threads'; expected one of async, poll"),
            ({"recv_max_size": 0}, "recv_max_size must be a positive int, got 0"),
            ({"buffer_frames": -1}, "buffer_frames must be within 0..8192, got -1"),
            ({"contexts": 0}, "contexts must be within 1..4096, got 0"),
            (
                {"tls": TlsOptions(cert_file="c.pem", key_file="k.pem")},
                "TLS settings are given but the address is not tls+tcp://: listen on a "
                "tls+tcp:// address, or unset them",
            ),
        ],
    )
    async def test_bad_options_are_config_errors(
        self, options: dict[str, Any], problem: str
    ) -> None:
        """Each wrong option is one readable problem naming the address."""
        arguments: dict[str, Any] = {"pattern": "pull", "mode": "listen", "recv_max_size": MAX}
        with pytest.raises(ConfigError) as caught:
            await open_wire("tcp://127.0.0.1:0", **{**arguments, **options})
        assert caught.value.problems == (f"tcp://127.0.0.1:0: {problem}",)

    async def test_unknown_scheme_is_a_config_error(self) -> None:
        """An address NNG has no transport for is reported as such."""
        with pytest.raises(ConfigError, match="not an address NNG can dial on"):
            await open_wire("nope://x", pattern="push", mode="dial", recv_max_size=MAX)

    async def test_port_in_use_is_an_os_error(self) -> None:
        """Listening twice on one port fails like any bind."""
        async with opened("tcp://127.0.0.1:0", pattern="pull", mode="listen") as pull:
            with pytest.raises(OSError, match="^cannot listen on tcp://127.0.0.1:"):
                await open_wire(address_of(pull), pattern="pull", mode="listen", recv_max_size=MAX)

    async def test_direction_and_addressing_are_checked(self) -> None:
        """Pull cannot send, push cannot receive, only pair1 takes to=."""
        async with opened("tcp://127.0.0.1:0", pattern="pull", mode="listen") as pull:
            async with opened(address_of(pull), pattern="push", mode="dial") as push:
                with pytest.raises(ConfigError, match="a pull wire cannot send"):
                    await pull.send_frame(b"x")
                with pytest.raises(ConfigError, match="a push wire cannot receive"):
                    await push.receive_frame()
                with pytest.raises(ConfigError, match="to= takes a pair1 Received.reply_to"):
                    await push.send_frame(b"x", to="somebody")


class TestTls:
    @pytest.mark.parametrize(
        ("mode", "tls", "problem"),
        [
            (
                "listen",
                TlsOptions(cert_file="c.pem"),
                "TLS cert_file (FASTWORKER_TLS_CERT) is set without key_file "
                "(FASTWORKER_TLS_KEY): they go together",
            ),
            (
                "dial",
                TlsOptions(ca_file="ca.pem", key_file="k.pem"),
                "TLS key_file (FASTWORKER_TLS_KEY) is set without cert_file "
                "(FASTWORKER_TLS_CERT): they go together",
            ),
            ("listen", TlsOptions(ca_file="ca.pem"), "a TLS listener needs cert_file and key_file"),
            ("dial", TlsOptions(server_name="node1"), "a TLS dialer needs ca_file"),
        ],
    )
    async def test_incomplete_options_are_config_errors(
        self, mode: Any, tls: TlsOptions, problem: str
    ) -> None:
        """What each end needs is checked before any socket opens."""
        with pytest.raises(ConfigError, match=re.escape(problem)):
            await open_wire(
                "tls+tcp://127.0.0.1:0", pattern="pull", mode=mode, recv_max_size=MAX, tls=tls
            )

    @pytest.mark.parametrize("tls", [None, TlsOptions(cert_file="", ca_file="")])
    async def test_tls_address_needs_tls_options(self, tls: TlsOptions | None) -> None:
        """A tls+tcp:// address without TLS settings (empty ones are unset) is refused."""
        with pytest.raises(ConfigError, match=re.escape("a tls+tcp:// listener needs TLS settings")):
            await open_wire(
                "tls+tcp://127.0.0.1:0", pattern="pull", mode="listen", recv_max_size=MAX,
                tls=tls,
            )

    async def test_missing_file_is_named(self, tmp_path: Path) -> None:
        """A PEM file that does not exist is named with its variable."""
        missing = tmp_path / "missing.pem"
        tls = TlsOptions(cert_file=str(missing), key_file=str(missing), ca_file=str(missing))
        problem = re.escape(f"TLS cert_file (FASTWORKER_TLS_CERT) {missing}: no such file")
        with pytest.raises(ConfigError, match=problem):
            await open_wire(
                "tls+tcp://0.0.0.0:0", pattern="pull", mode="listen", recv_max_size=MAX, tls=tls
            )

    async def test_unreadable_file_is_named(self, tmp_path: Path) -> None:
        """A PEM path that exists but cannot be read is named when the wire opens."""
        unreadable = tmp_path / "dir.pem"
        unreadable.mkdir()
        (tmp_path / "k.pem").write_text("x")
        tls = TlsOptions(cert_file=str(tmp_path / "k.pem"), key_file=str(tmp_path / "k.pem"),
                         ca_file=str(unreadable))
        with pytest.raises(ConfigError, match="cannot read TLS ca_file .*dir.pem: .*Is a directory"):
            await open_wire(
                "tls+tcp://0.0.0.0:0", pattern="pull", mode="listen", recv_max_size=MAX, tls=tls
            )

    async def test_garbage_pem_is_a_config_error(self, tmp_path: Path) -> None:
        """Files that are not PEM certificates are refused when the wire opens."""
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        tls = TlsOptions(ca_file=str(junk))
        with pytest.raises(ConfigError, match="TLS files not usable as PEM certificates"):
            await open_wire(
                "tls+tcp://127.0.0.1:1", pattern="push", mode="dial", recv_max_size=MAX, tls=tls
            )
