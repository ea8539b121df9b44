"""actors.nng over real NNG sockets, on loopback only.

Every wait is on the system (a frame arriving, a connection closing, tasks
blocking); ``trio.fail_after`` only guards against a hang.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.errors import ConfigError
from actors.nng import NngWire, TlsOptions, check_listen_address, open_wire
from actors.wire import Received, Wire

MAX = 64 * 1024
GUARD = 10  # seconds; a hang fails the test instead of stalling the run
IO_MODES = ["poll", "async"]
# The SP handshake a push0 socket sends first: "\0SP\0", protocol 0x50, reserved.
PUSH_HANDSHAKE = b"\x00SP\x00\x00\x50\x00\x00"


@contextlib.asynccontextmanager
async def opened(address: str, **options: Any) -> AsyncIterator[NngWire]:
    options.setdefault("recv_max_size", MAX)
    wire = await open_wire(address, **options)
    try:
        yield wire
    finally:
        await wire.aclose()


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
            "refusing to listen on tcp://0.0.0.0:5555 without a shared secret: set one "
            "(FASTWORKER_SECRET, or the edge's `secret` / `secret_file` option), "
            "configure TLS, or listen on a loopback address such as tcp://127.0.0.1:5555"
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
                "unknown pattern 'req'; expected one of bus, pair, pair1, pull, push",
            ),
            ({"mode": "bind"}, "unknown mode 'bind'; expected one of dial, listen"),
            ({"io": "threads"}, "unknown io 'threads'; expected one of async, poll"),
            ({"recv_max_size": 0}, "recv_max_size must be a positive int, got 0"),
            ({"buffer_frames": -1}, "buffer_frames must be within 0..8192, got -1"),
            (
                {"tls": TlsOptions(cert_file="c.pem", key_file="k.pem")},
                "TLS options go with, and only with, a tls+tcp:// address",
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
            ("listen", TlsOptions(cert_file="c.pem"), "TLS cert_file and key_file go together"),
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

    async def test_tls_address_needs_tls_options(self) -> None:
        """A tls+tcp:// address without TlsOptions is refused."""
        with pytest.raises(ConfigError, match="TLS options go with, and only with"):
            await open_wire(
                "tls+tcp://127.0.0.1:0", pattern="pull", mode="listen", recv_max_size=MAX
            )

    async def test_missing_file_is_named(self, tmp_path: Path) -> None:
        """An unreadable PEM file is named; TLS also counts as secured on 0.0.0.0."""
        missing = tmp_path / "missing.pem"
        tls = TlsOptions(cert_file=str(missing), key_file=str(missing))
        problem = f"cannot read TLS cert_file {re.escape(str(missing))}"
        with pytest.raises(ConfigError, match=problem):
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
