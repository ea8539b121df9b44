"""Edges: messages out as batched frames, frames in as routed messages, and
bad frames dropped, counted and logged while the edge keeps running."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ConfigError,
    Edge,
    FrameError,
    Framer,
    GetStats,
    Requester,
    Requests,
    ServeEdge,
    StaleFrame,
    Topology,
    open_node,
)
from actors.testing import RawRequests, memory_wire_pair
from tests.actors.helpers import Blob, Note, Recorder, codec

CODEC = "tests.actors.helpers:codec"


def pair(*, secret_a: str = "", secret_b: str = "", **options: Any) -> tuple[Topology, Any, list[Any]]:
    """rec_a -> edge_a ~~memory~~ edge_b -> rec_b; returns the far end's wire too."""
    wire_a, wire_b = memory_wire_pair(capacity=1000, names=("a", "b"))
    seen: list[Any] = []
    topology = (
        Topology()
        .add("edge_a", Edge, params={"wire": wire_a}, codec=CODEC, secret=secret_a, **options)
        .add("edge_b", Edge, refs={"Note": "rec_b"}, params={"wire": wire_b}, codec=CODEC,
             secret=secret_b, **options)
        .add("rec_b", Recorder, params={"seen": seen})
    )
    return topology, wire_a, seen


async def edge_stats(node: Any, name: str) -> Any:
    return (await node.refs[name].call(GetStats(), timeout=5)).detail


async def test_messages_cross_an_edge_pair_in_order_and_in_few_frames() -> None:
    """A burst of messages arrives complete and in order, packed into far
    fewer frames than messages."""
    topology, _, seen = pair()
    async with open_node(topology) as node:
        await node.refs["edge_a"].send_batch([Note(n) for n in range(500)])
        # A call to the receiver after the last note is answered once all arrived.
        while len(seen) < 500:
            await trio.testing.wait_all_tasks_blocked()
        out = await edge_stats(node, "edge_a")
        into = await edge_stats(node, "edge_b")
    assert seen == list(range(500))
    assert out.messages_out == 500 and into.messages_in == 500
    assert out.frames_out < 50
    assert into.frames_in == out.frames_out


async def test_messages_without_a_route_are_counted_not_delivered() -> None:
    """A message whose tag has no ref and no default route is counted."""
    wire_a, wire_b = memory_wire_pair()
    topology = (
        Topology()
        .add("edge_a", Edge, params={"wire": wire_a}, codec=CODEC)
        .add("edge_b", Edge, refs={"Other": "rec"}, params={"wire": wire_b}, codec=CODEC)
        .add("rec", Recorder)
    )
    async with open_node(topology) as node:
        await node.refs["edge_a"].send(Note(1))
        await trio.testing.wait_all_tasks_blocked()
        assert (await edge_stats(node, "edge_b")).messages_unrouted == 1


async def test_the_default_route_takes_what_has_no_route_of_its_own() -> None:
    """refs.default receives every message whose tag is not wired."""
    wire_a, wire_b = memory_wire_pair()
    seen: list[Any] = []
    topology = (
        Topology()
        .add("edge_a", Edge, params={"wire": wire_a}, codec=CODEC)
        .add("edge_b", Edge, refs={"default": "rec"}, params={"wire": wire_b}, codec=CODEC)
        .add("rec", Recorder, params={"seen": seen})
    )
    async with open_node(topology) as node:
        await node.refs["edge_a"].send(Note(7))
        await trio.testing.wait_all_tasks_blocked()
    assert seen == [7]


@pytest.mark.parametrize(
    ("bad_frame", "reason"),
    [
        pytest.param(b"garbage that is no frame", "not a frame (magic b'ga')", id="garbage"),
        pytest.param(b"x" * 5000, "frame of 5000 bytes exceeds the limit of 4096", id="oversized"),
        pytest.param(
            Framer(codec, secret=b"wrong").pack([Note(1)]), "bad auth tag", id="forged"
        ),
        pytest.param(
            Framer(codec).pack([Note(1)]),
            "unsigned frame (this end requires a shared secret)",
            id="unsigned",
        ),
    ],
)
async def test_a_bad_frame_is_dropped_counted_and_logged_and_the_edge_keeps_running(
    bad_frame: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed, oversized, forged or unsigned frames never reach an actor;
    the next good frame does."""
    topology, wire_a, seen = pair(secret_a="s3cret", secret_b="s3cret", max_frame_bytes=4096)
    with caplog.at_level(logging.WARNING, logger="actors.edge"):
        async with open_node(topology) as node:
            await wire_a.send_frame(bad_frame)
            await node.refs["edge_a"].send(Note(2))
            while not seen:
                await trio.testing.wait_all_tasks_blocked()
            stats = await edge_stats(node, "edge_b")
    assert seen == [2]
    assert stats.frames_dropped == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"dropped frame from a: {reason} (1 dropped in the last 60 s)"
    ]


async def test_dropped_frame_lines_are_rate_limited(
    caplog: pytest.LogCaptureFixture, autojump_clock: object
) -> None:
    """A flood of bad frames gives one log line per period, with the count."""
    topology, wire_a, _ = pair(log_period=10.0)
    with caplog.at_level(logging.WARNING, logger="actors.edge"):
        async with open_node(topology) as node:
            for _ in range(5):
                await wire_a.send_frame(b"junk")
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(11)
            await wire_a.send_frame(b"junk")
            await trio.testing.wait_all_tasks_blocked()
            assert (await edge_stats(node, "edge_b")).frames_dropped == 6
    assert [r.getMessage() for r in caplog.records] == [
        "dropped frame from a: truncated header (4 bytes) (1 dropped in the last 10 s)",
        "dropped frame from a: truncated header (4 bytes) (5 dropped in the last 10 s)",
    ]


async def test_a_message_too_large_for_any_frame_is_refused_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outgoing message that alone exceeds the frame limit is refused and
    counted; the rest of its batch is sent and the edge keeps running."""
    from tests.actors.helpers import Blob

    topology, _, seen = pair(max_frame_bytes=256)
    with caplog.at_level(logging.WARNING, logger="actors.edge"):
        async with open_node(topology) as node:
            await node.refs["edge_a"].send_batch([Note(1), Blob(b"x" * 1000), Note(2)])
            while len(seen) < 2:
                await trio.testing.wait_all_tasks_blocked()
            stats = await edge_stats(node, "edge_a")
    assert seen == [1, 2]
    assert (stats.messages_out, stats.messages_refused) == (2, 1)
    assert [r.getMessage() for r in caplog.records] == [
        "refused to send: message Blob alone makes a frame of 1022 bytes, over the limit "
        "of 256 (1 refused in the last 60 s)"
    ]


async def test_secret_file_signs_frames(tmp_path: Path) -> None:
    """secret_file is read (trimmed) and used like secret."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")
    topology, _, seen = pair(secret_b="s3cret")
    topology.actors[0] = type(topology.actors[0])(
        name="edge_a", kind=Edge, params=topology.actors[0].params,
        options={"codec": CODEC, "secret_file": str(secret_file)},
    )
    async with open_node(topology) as node:
        await node.refs["edge_a"].send(Note(3))
        while not seen:
            await trio.testing.wait_all_tasks_blocked()
    assert seen == [3]


def test_listening_off_loopback_without_a_secret_is_refused() -> None:
    """An edge will not listen on a non-loopback address without a secret (a
    config error, found before anything starts), and says how to set one."""
    topology = Topology().add("edge", Edge, codec=CODEC, address="tcp://0.0.0.0:5555")
    with pytest.raises(ConfigError) as raised:
        topology.resolve()
    assert raised.value.problems == (
        "<python>: $.actors.edge: refusing to listen on tcp://0.0.0.0:5555 without a shared "
        "secret or mutual TLS: set a secret (FASTWORKER_SECRET, or the edge's `secret` / "
        "`secret_file` option), use mutual TLS (a tls+tcp:// address with a client CA: "
        "FASTWORKER_TLS_CA, or the edge's `tls.ca_file`), or listen on a loopback address "
        "such as tcp://127.0.0.1:5555",
    )


def test_listening_off_loopback_with_a_secret_is_allowed() -> None:
    """With a secret configured, a non-loopback listen passes the check."""
    Topology().add("edge", Edge, codec=CODEC, address="tcp://0.0.0.0:5555", secret="s").resolve()


async def test_an_edge_pair_over_nng_on_loopback(loopback_address: str) -> None:
    """The same pair over a real NNG socket on a free loopback port."""
    seen: list[Any] = []
    arrived = trio.Event()
    topology = (
        Topology()
        .add("out", Edge, codec=CODEC, address=loopback_address, mode="dial")
        .add("in", Edge, refs={"Note": "rec"}, codec=CODEC, address=loopback_address)
        .add("rec", Recorder, params={"seen": seen, "when": (100, arrived)})
    )
    async with open_node(topology) as node:
        assert node.ready["in"] == f"listening on {loopback_address}"
        await node.refs["out"].send_batch([Note(n) for n in range(100)])
        with trio.fail_after(10):
            await arrived.wait()
    assert seen == list(range(100))


@pytest.mark.parametrize("pattern", ["pair", "push"])
async def test_a_fast_sender_over_nng_loses_nothing(loopback_address: str, pattern: str) -> None:
    """With a pattern that pushes back, a sender far faster than the receiver
    makes the edges wait; every message arrives, in order."""
    seen: list[Any] = []
    arrived = trio.Event()
    far = {"push": "pull"}.get(pattern, pattern)
    topology = (
        Topology()
        .add("out", Edge, codec=CODEC, address=loopback_address, mode="dial", pattern=pattern)
        .add("in", Edge, refs={"Note": "rec"}, codec=CODEC, address=loopback_address,
             pattern=far)
        .add("rec", Recorder, params={"seen": seen, "when": (5000, arrived)})
    )
    async with open_node(topology) as node:
        for n in range(5000):
            await node.refs["out"].send(Note(n))
        with trio.fail_after(30):
            await arrived.wait()
    assert seen == list(range(5000))


async def test_a_request_whose_answer_times_out_leaves_the_serving_edge_running(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A ServeEdge whose target does not answer within call_timeout answers
    nothing to that request, logs it, and serves the next one."""
    from actors import Actor, Requests, ServeEdge

    class Slow(Actor[Any]):
        async def handle(self, message: Any) -> Any:
            assert isinstance(message, Requests)
            if message.messages[0].value == 0:
                self.defer()  # never answered
                return None
            return [Note(m.value * 10) for m in message.messages]

    server_wire, client_wire = memory_wire_pair()
    framer = Framer(codec)
    topology = (
        Topology()
        .add("serve", ServeEdge, refs={"Note": "slow"}, params={"wire": server_wire},
             codec=CODEC, call_timeout=5.0, contexts=2)
        .add("slow", Slow)
    )
    with caplog.at_level(logging.WARNING, logger="actors.edge"):
        async with open_node(topology) as node:
            raw = RawRequests(framer, _RequestOverMemory(client_wire).ask)
            await raw.learn_epoch()
            await client_wire.send_frame(raw.frame([Note(0)]))
            await trio.sleep(6)  # virtual time: past call_timeout
            await client_wire.send_frame(raw.frame([Note(4)]))
            reply = await client_wire.receive_frame()
            stats = await edge_stats(node, "serve")
    assert framer.unpack(reply.frame) == [Note(40)]
    assert stats.unanswered == 1 and stats.replies == 1
    assert {c.name: c.context.restarts for c in node.supervisor.children} == {"slow": 0, "serve": 0}
    assert any("no answer to a request from b: slow did not answer Requests within 5" in r.getMessage()
               for r in caplog.records)


async def test_an_answer_too_large_for_a_frame_is_refused_at_once_and_handed_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ServeEdge whose answers would make a frame over its limit answers
    with an empty frame at once (the requester raises ``Unanswered``), logs
    it, hands the answers to the actor wired under ``Unsent``, and serves
    the next request."""
    from actors import Actor, Requester, Requests, ServeEdge, Unanswered, Unsent

    class Big(Actor[Any]):
        """Answers each Note with a Blob of ``value`` bytes; keeps Unsents."""

        def __init__(self, options: Any, context: Any, *, unsent: list[Unsent]) -> None:
            super().__init__(options, context)
            self.unsent = unsent

        async def handle(self, message: Any) -> Any:
            if isinstance(message, Unsent):
                self.unsent.append(message)
                return None
            assert isinstance(message, Requests)
            return [Blob(b"x" * m.value) for m in message.messages]

    unsent: list[Unsent] = []
    server_wire, client_wire = memory_wire_pair()
    framer = Framer(codec, max_frame_bytes=4096)
    topology = (
        Topology()
        .add("serve", ServeEdge, refs={"Note": "big", "Unsent": "big"},
             params={"wire": server_wire}, codec=CODEC, max_frame_bytes=4096)
        .add("big", Big, params={"unsent": unsent})
    )
    with caplog.at_level(logging.WARNING, logger="actors.edge"):
        async with open_node(topology) as node:
            requester = Requester(_RequestOverMemory(client_wire), framer)
            with trio.fail_after(5):
                with pytest.raises(Unanswered, match="could not send its answer: too large"):
                    await requester.ask([Note(2000), Note(3000)], timeout=None)
                assert await requester.ask([Note(10)], timeout=None) == [Blob(b"x" * 10)]
            stats = await edge_stats(node, "serve")
    assert stats.unanswered == 1 and stats.replies == 2
    assert [(u.messages, u.answers) for u in unsent] == [
        ((Note(2000), Note(3000)), (Blob(b"x" * 2000), Blob(b"x" * 3000)))]
    assert "exceeds the limit of 4096" in unsent[0].reason
    assert any("no answer to a request from b: frame of" in r.getMessage()
               and "told the requester" in r.getMessage() for r in caplog.records)


class _RequestOverMemory:
    """A request wire over one end of a memory wire pair (one request at a time)."""

    name = "memory"

    def __init__(self, wire: Any) -> None:
        self._wire = wire

    async def request(self, frame: bytes, *, timeout: float | None) -> bytes:
        return await self.ask(frame)

    async def ask(self, frame: bytes) -> bytes:
        await self._wire.send_frame(frame)
        reply = await self._wire.receive_frame()
        data: bytes = reply.frame
        return data


class _Tens(Actor[Any]):
    """Answers each Note with Note(value * 10) and remembers what it saw."""

    def __init__(self, options: Any, context: Any, *, seen: list[int]) -> None:
        super().__init__(options, context)
        self.seen = seen

    async def handle(self, message: Any) -> Any:
        assert isinstance(message, Requests)
        self.seen += [m.value for m in message.messages]
        return [Note(m.value * 10) for m in message.messages]


def _serving(wire: Any, seen: list[int], **options: Any) -> Topology:
    return (
        Topology()
        .add("serve", ServeEdge, refs={"Note": "tens"}, params={"wire": wire}, codec=CODEC,
             secret="s3cret", **options)
        .add("tens", _Tens, params={"seen": seen})
    )


SIGNING = Framer(codec, secret=b"s3cret")


async def test_a_replayed_request_is_refused_counted_per_peer_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same signed request frame sent again is answered with a refusal
    (StaleFrame), not handled: counted under its peer, logged once."""
    server_wire, client_wire = memory_wire_pair(names=("a", "b"))
    seen: list[int] = []
    with caplog.at_level(logging.WARNING, logger="actors.edge"):
        async with open_node(_serving(server_wire, seen)) as node:
            raw = RawRequests(SIGNING, _RequestOverMemory(client_wire).ask)
            frame, answers = await raw.send([Note(7)])
            for _ in range(3):
                with pytest.raises(StaleFrame):
                    await raw.resend(frame)
            stats = await edge_stats(node, "serve")
    assert answers == [Note(70)] and seen == [7]
    assert (stats.frames_stale, stats.stale_by_peer, stats.epochs_told) == (3, {"b": 3}, 1)
    assert stats.replies == 1 and stats.senders == 1
    sender, seq = raw.stamper.sender, 2
    assert [r.getMessage() for r in caplog.records] == [
        f"refused a stale request from b (sender {sender:x}, sequence {seq}): "
        "sequence already seen (1 refused as stale in the last 60 s)"]


async def test_a_requester_learns_the_epoch_and_restamps_after_a_restart() -> None:
    """A Requester's first question costs one refusal (it learns the
    epoch); after the server restarts (a new epoch), the next question is
    refused once, restamped and answered; the old frame stays refused."""
    seen: list[int] = []
    client = _RequestOverMemory(None)
    requester = Requester(client, SIGNING)  # type: ignore[arg-type]
    raw = RawRequests(SIGNING, client.ask)
    epochs = []
    for start in range(2):
        server_wire, client._wire = memory_wire_pair(names=("a", "b"))
        async with open_node(_serving(server_wire, seen)) as node:
            if start == 0:
                captured, _ = await raw.send([Note(1)])
            else:
                with pytest.raises(StaleFrame):
                    await raw.resend(captured)
            assert await requester.ask([Note(start + 2)], timeout=None) == [Note(start * 10 + 20)]
            stats = await edge_stats(node, "serve")
            epochs.append(requester.stamper.epoch)
            assert stats.epoch == f"{requester.stamper.epoch:016x}"
    assert seen == [1, 2, 3]
    assert epochs[0] != epochs[1]
    # after the restart: the replay, and the requester's frame for the old epoch
    assert (stats.frames_stale, stats.epochs_told) == (2, 0)


class _ResentOverMemory(_RequestOverMemory):
    """Like NNG's req socket when the connection drops after the request
    went out: the first request's reply is lost and the same bytes go out
    again, once."""

    resent = 0

    async def request(self, frame: bytes, *, timeout: float | None) -> bytes:
        if not self.resent:
            self.resent += 1
            await self.ask(frame)  # its reply is lost with the connection
        return await self.ask(frame)


async def test_a_resent_request_is_restamped_and_answered() -> None:
    """A request resent as identical bytes (its reply was lost) is refused
    as already seen, restamped by the Requester and answered; the actor
    sees the repeat, which the application recognises (task ids)."""
    server_wire, client_wire = memory_wire_pair(names=("a", "b"))
    seen: list[int] = []
    async with open_node(_serving(server_wire, seen)) as node:
        requester = Requester(_RequestOverMemory(client_wire), SIGNING)  # type: ignore[arg-type]
        assert await requester.ask([Note(1)], timeout=None) == [Note(10)]
        requester.wire = _ResentOverMemory(client_wire)  # type: ignore[assignment]
        with trio.fail_after(5):
            assert await requester.ask([Note(2)], timeout=None) == [Note(20)]
        stats = await edge_stats(node, "serve")
    assert seen == [1, 2, 2]
    assert stats.frames_stale == 1 and stats.stale_by_peer == {"b": 1}


async def test_a_full_table_of_senders_starts_a_new_epoch_and_everyone_still_gets_answers() -> None:
    """With room for one sender, two requesters taking turns each start a
    new epoch; both are answered every time (restamping), nothing is
    handled twice."""
    server_wire, client_wire = memory_wire_pair(names=("a", "b"))
    seen: list[int] = []
    async with open_node(_serving(server_wire, seen, max_senders=1)) as node:
        wire = _RequestOverMemory(client_wire)
        first, second = Requester(wire, SIGNING), Requester(wire, SIGNING)  # type: ignore[arg-type]
        for n in range(3):
            assert await first.ask([Note(n)], timeout=None) == [Note(n * 10)]
            assert await second.ask([Note(n + 100)], timeout=None) == [Note(n * 10 + 1000)]
        stats = await edge_stats(node, "serve")
    assert seen == [0, 100, 1, 101, 2, 102]
    assert stats.epochs_rotated == 5 and stats.senders == 1


async def test_a_requester_gives_up_after_refusals_in_a_row() -> None:
    """A server that refuses every request (its epoch changes each time)
    makes the question fail with a FrameError saying so, not loop."""

    class Refusing:
        name = "dialing refusing"

        def __init__(self) -> None:
            self.sent = 0

        async def request(self, frame: bytes, *, timeout: float | None) -> bytes:
            self.sent += 1
            stamp, _ = SIGNING.unpack_stamped(frame)
            assert stamp is not None
            return SIGNING.refusal((self.sent, stamp[1], stamp[2]))

    wire = Refusing()
    requester = Requester(wire, SIGNING)  # type: ignore[arg-type]
    with pytest.raises(FrameError, match="dialing refusing refused the request as stale 4 times"):
        await requester.ask([Note(1)], timeout=None)
    assert wire.sent == 4


async def test_a_request_resent_after_its_server_restarted_is_answered(
    loopback_address: str,
) -> None:
    """Over real NNG: a request held by a server that then stops is resent
    by the req socket, as the same bytes, to the server started again on
    the same address; that one refuses it (an earlier epoch), the Requester
    restamps it and gets its answer. No hang, no lost request."""
    from actors.nng import open_request_wire

    received = trio.Event()

    class Holding(Actor[Any]):
        """Takes a request and never answers it."""

        async def handle(self, message: Any) -> Any:
            received.set()
            self.defer()
            return None

    seen: list[int] = []
    holding = (
        Topology()
        .add("serve", ServeEdge, refs={"Note": "hold"}, codec=CODEC, secret="s3cret",
             address=loopback_address)
        .add("hold", Holding)
    )
    serving = (
        Topology()
        .add("serve", ServeEdge, refs={"Note": "tens"}, codec=CODEC, secret="s3cret",
             address=loopback_address)
        .add("tens", _Tens, params={"seen": seen})
    )
    wire = await open_request_wire(loopback_address, recv_max_size=1 << 20)
    requester = Requester(wire, SIGNING)
    answers: list[Any] = []
    answered = trio.Event()

    async def ask() -> None:
        answers.extend(await requester.ask([Note(5)], timeout=None))
        answered.set()

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                async with open_node(holding):
                    nursery.start_soon(ask)
                    await received.wait()
                async with open_node(serving) as node:
                    await answered.wait()
                    stats = await edge_stats(node, "serve")
    finally:
        await wire.aclose()
    assert answers == [Note(50)] and seen == [5]
    assert stats.frames_stale == 1


@pytest.mark.parametrize(("peer", "host"), [
    ("tcp://10.0.0.7:40514", "tcp://10.0.0.7"),
    ("tcp://[::1]:5555", "tcp://[::1]"),
    ("tls+tcp://node.example:6000", "tls+tcp://node.example"),
    ("ipc:///run/fw.sock", "ipc:///run/fw.sock"),
    ("b", "b"),
])
def test_stale_requests_are_counted_by_peer_host(peer: str, host: str) -> None:
    """``stale_by_peer`` keys: a host's connections (each on a port of its
    own) count together, so 32 keys are 32 hosts, not the first 32 connections."""
    from actors.serve import peer_host

    assert peer_host(peer) == host
