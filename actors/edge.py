"""Edge actors: where messages leave a process and where bytes enter one.

An ``Edge`` owns one wire (an NNG socket, or any ``actors.wire.Wire``).
Messages sent to the edge's ref are packed, a drained batch at a time, into
as few frames as the size limit allows and sent. Frames that arrive are
checked and decoded, and each message is passed on to the ref wired under
its tag (the message class's name), or to ``default``; one frame's messages
for the same target are sent together.

Edges distrust the network: a frame that is malformed, too large, of an
unknown version or fails authentication is dropped and counted, with a
rate-limited log line naming the peer, and the edge keeps running. A
serving edge also refuses a request frame it has seen before, or one meant
for an earlier start of the process (``actors.freshness``): it answers with
a small refusal the requester re-stamps and resends after, and counts the
refusal per peer. A listen on a non-loopback address is refused unless a
shared secret or mutual TLS (a ``tls`` table with ``ca_file``)
authenticates its peers. A serving edge bounds what waits for each
client's connection: a client that does not read its replies is dropped,
logged and counted, and never holds up the others' replies.

``InboundEdge`` and ``OutboundEdge`` are the same actor with defaults for
one direction: an inbound edge listens and must route what it receives; an
outbound edge dials and only sends.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import attrs
import trio

from actors.actor import Actor, ActorContext
from actors.codec import Codec
from actors.errors import CallTimeout, ConfigError, FrameError, PeerDropped
from actors.frame import DEFAULT_MAX_FRAME_BYTES, Framer, Stamp
from actors.freshness import DEFAULT_MAX_SENDERS, ReplayWindow
from actors.log import RateLimitedLog
from actors.mailbox import Ref
from actors.nng import (
    DEFAULT_BUFFER_FRAMES,
    DEFAULT_PEER_REPLY_BYTES,
    DEFAULT_REPLY_TIMEOUT,
    TlsOptions,
    check_listen_address,
    open_wire,
)
from actors.requests import Requests, Unsent
from actors.secret import check_secret_choice, frame_secret, shared_secret
from actors.tls import resolve_tls
from actors.wire import Received, Wire

log = logging.getLogger("actors.edge")

#: The ref that receives messages whose tag has no ref of its own.
DEFAULT_ROUTE = "default"


def load_codec(path: str) -> Codec:
    """The ``Codec`` named by a ``package.module:attribute`` path.

    Raises:
        ValueError: the path does not name a Codec, with the reason.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"codec: expected 'package.module:attribute', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ValueError(
            f"codec: cannot import module {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    codec = getattr(module, attribute, None)
    if not isinstance(codec, Codec):
        raise ValueError(f"codec: {path!r} is not an actors.codec.Codec (got {codec!r})")
    return codec


def _check_codec(_instance: Any, _attribute: Any, value: str) -> None:
    load_codec(value)


@attrs.frozen(kw_only=True)
class EdgeOptions:
    """An edge's options.

    Attributes:
        address: the NNG address, e.g. ``tcp://127.0.0.1:5555``.
        codec: ``package.module:attribute`` of the ``Codec`` both ends use.
        mode: ``listen`` or ``dial`` (a dialer reconnects by itself).
        pattern: the NNG socket pattern (see docs/transport.md).
        secret: the shared secret; every frame is signed with it and every
            frame received must carry a valid tag. Usually
            ``"${FASTWORKER_SECRET:-}"``.
        secret_file: a file holding the secret (instead of ``secret``);
            ``"auto"``: this user's per-host secret, made on first use
            (``secret`` overrides it); ``"none"`` or empty: unsigned frames.
            See ``actors.secret``.
        max_frame_bytes: the largest frame sent or accepted.
        tls: TLS for a ``tls+tcp://`` address (``cert_file``, ``key_file``,
            ``ca_file``, ``server_name``; empty strings are unset, so
            ``"${FASTWORKER_TLS_CA:-}"`` works); a listener with ``ca_file``
            demands client certificates (mutual TLS). See docs/transport.md.
        buffer_frames: frames NNG may queue each way; more is faster, but
            queued frames are lost when the peer restarts.
        io: ``poll`` (drive the socket by its descriptors; faster) or
            ``async`` (pynng's own async calls).
        log_period: at most one "dropped frame" line per this many seconds.
    """

    address: str = ""
    codec: str = attrs.field(validator=_check_codec)
    mode: Literal["listen", "dial"] = "listen"
    # pair pushes back when the peer is slow; pair1 and bus drop frames
    # instead (docs/transport.md), so they are never the default.
    pattern: Literal["pair", "pair1", "push", "pull", "bus"] = "pair"
    secret: str = attrs.field(default="", repr=False)
    secret_file: str = ""
    max_frame_bytes: int = attrs.field(
        default=DEFAULT_MAX_FRAME_BYTES, validator=attrs.validators.ge(64)
    )
    tls: TlsOptions | None = None
    buffer_frames: int = attrs.field(default=DEFAULT_BUFFER_FRAMES, validator=attrs.validators.ge(0))
    io: Literal["poll", "async"] = "poll"
    log_period: float = 60.0

    def __attrs_post_init__(self) -> None:
        check_secret_choice(self.secret, self.secret_file)
        if not self.address:
            return
        # Refused when the topology is checked, not when the socket opens.
        tls = resolve_tls(self.address, self.tls, self.mode)
        if self.mode == "listen":
            # The per-host secret protects this host only: beyond it, other
            # hosts need a secret set on purpose (or mutual TLS).
            mutual = tls is not None and tls.mutual
            secured = shared_secret(self.secret, self.secret_file) or mutual
            check_listen_address(self.address, secured=secured)

    def read_secret(self) -> bytes | None:
        """The bytes that sign this edge's frames (``actors.secret.frame_secret``;
        the per-host secret is made if missing, unless mutual TLS
        authenticates instead); ``None``: unsigned."""
        tls = resolve_tls(self.address, self.tls, self.mode) if self.address else None
        return frame_secret(self.secret, self.secret_file, create=True,
                            mutual_tls=tls is not None and tls.mutual)


@attrs.frozen(kw_only=True)
class EdgeStats:
    """What an edge moved and what it refused."""

    wire: str
    frames_in: int
    frames_out: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    frames_dropped: int
    messages_unrouted: int
    messages_refused: int


class _WireActor(Actor[Any]):
    """What every edge has: a framer for its codec and secret, a wire it
    opens itself (or is given, in tests and Python compositions) and closes
    when it stops, and a rate-limited log of dropped frames."""

    refs_optional: ClassVar[tuple[str, ...]] = (DEFAULT_ROUTE,)
    refs_open = True

    def __init__(self, options: EdgeOptions, context: ActorContext, *, wire: Wire | None = None):
        super().__init__(options, context)
        self._given_wire = wire
        self.wire: Wire | None = None
        self.framer = Framer(
            load_codec(options.codec),
            secret=options.read_secret(),
            max_frame_bytes=options.max_frame_bytes,
        )
        self._dropped_log = RateLimitedLog(log, period=options.log_period)
        self._unrouted = 0

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            if self.wire is not None and self._given_wire is None:
                with trio.CancelScope(shield=True):
                    await self.wire.aclose()

    def _warn_unsigned(self, wire: Wire) -> None:
        """Say once that a listening wire takes unsigned frames: any local
        process may send this node messages (pickled code, for a task queue)."""
        if not self.framer.signed:
            log.warning(
                "%s: %s takes unsigned frames: any process that can reach it may send it "
                "messages; set secret_file = \"auto\" (or FASTWORKER_SECRET) to sign them",
                self.name, wire.name)

    def _runs(self, messages: list[Any]) -> list[tuple[Ref[Any], list[Any]]]:
        """Messages split into runs bound for the same ref (by tag, else
        ``default``), in order; those with no route are counted, not sent."""
        routes: Mapping[str, Ref[Any]] = self.refs
        default = routes.get(DEFAULT_ROUTE)
        runs: list[tuple[Ref[Any], list[Any]]] = []
        for message in messages:
            ref = routes.get(type(message).__name__, default)
            if ref is None:
                self._unrouted += 1
            elif runs and runs[-1][0] is ref:
                runs[-1][1].append(message)
            else:
                runs.append((ref, [message]))
        return runs


class Edge(_WireActor):
    """Sends the messages it is given as frames; routes the frames it
    receives as messages (see the module docstring)."""

    Options = EdgeOptions
    batch_max = 1024
    batch_settle = True  # one frame per batch: let ready senders fill it

    def __init__(self, options: EdgeOptions, context: ActorContext, *, wire: Wire | None = None):
        super().__init__(options, context, wire=wire)
        self._counts = dict.fromkeys(
            ("frames_in", "frames_out", "messages_in", "messages_out", "bytes_in", "bytes_out"), 0
        )
        self._refused_log = RateLimitedLog(log, what="refused", period=options.log_period)
        self._refused_in_batch = 0

    async def setup(self, nursery: trio.Nursery) -> str | None:
        self.wire = self._given_wire or await self._open_wire()
        if self.refs:
            nursery.start_soon(self._receive_loop, self.wire)
        return self.wire.name

    async def _open_wire(self) -> Wire:
        options = self.options
        if not options.address:
            raise ConfigError(f"{self.name}: no address configured")
        wire = await open_wire(
            options.address,
            pattern=options.pattern,
            mode=options.mode,
            recv_max_size=options.max_frame_bytes,
            secured=self.framer.signed,
            tls=options.tls,
            io=options.io,
            buffer_frames=options.buffer_frames,
        )
        if options.mode == "listen":
            self._warn_unsigned(wire)
        return wire

    async def handle_batch(self, messages: list[Any]) -> None:
        assert self.wire is not None
        try:
            frames = self.framer.pack_batches(messages)
        except FrameError:
            frames = self._pack_refusing_oversized(messages)
        for frame in frames:
            await self.wire.send_frame(frame)
            self._counts["frames_out"] += 1
            self._counts["bytes_out"] += len(frame)
        self._counts["messages_out"] += len(messages) - self._refused_in_batch
        self._refused_in_batch = 0

    def _pack_refusing_oversized(self, messages: list[Any]) -> list[bytes]:
        """The slow path, taken only when some message alone is over the
        frame limit: pack one by one, refusing (and counting) those."""
        frames: list[bytes] = []
        sendable: list[Any] = []
        for message in messages:
            try:
                self.framer.pack_batches([message])
            except FrameError as error:
                self._refused_in_batch += 1
                self._refused_log.event("refused to send: %s", error)
                continue
            sendable.append(message)
        if sendable:
            frames = self.framer.pack_batches(sendable)
        return frames

    async def _receive_loop(self, wire: Wire) -> None:
        counts = self._counts
        while True:
            received = await wire.receive_frame()
            counts["frames_in"] += 1
            counts["bytes_in"] += len(received.frame)
            try:
                messages = self.framer.unpack(received.frame)
            except FrameError as error:
                self._dropped_log.event("dropped frame from %s: %s", received.peer, error)
                continue
            counts["messages_in"] += len(messages)
            for ref, run in self._runs(messages):
                await ref.send_batch(run)

    def stats_detail(self) -> EdgeStats:
        return EdgeStats(
            wire=self.wire.name if self.wire is not None else "not open",
            frames_dropped=self._dropped_log.total,
            messages_unrouted=self._unrouted,
            messages_refused=self._refused_log.total,
            **self._counts,
        )


@attrs.frozen(kw_only=True)
class InboundOptions(EdgeOptions):
    """An inbound edge's options: ``EdgeOptions``, listening by default."""

    mode: Literal["listen", "dial"] = "listen"


@attrs.frozen(kw_only=True)
class OutboundOptions(EdgeOptions):
    """An outbound edge's options: ``EdgeOptions``, dialing by default."""

    mode: Literal["listen", "dial"] = "dial"


class InboundEdge(Edge):
    """An edge that takes frames in and routes their messages; it must be
    wired with at least one route (``default`` or a message tag)."""

    Options = InboundOptions

    async def setup(self, nursery: trio.Nursery) -> str | None:
        if not self.refs:
            raise ConfigError(f"{self.name}: an inbound edge needs at least one ref to route to")
        return await super().setup(nursery)


class OutboundEdge(Edge):
    """An edge that only sends: the messages given to it leave as frames."""

    Options = OutboundOptions
    refs_optional = ()
    refs_open = False


def offset_address(address: str, offset: int) -> str:
    """``address`` with its port moved by ``offset`` (``tcp://h:5555`` + 4 ->
    ``tcp://h:5559``); an address without a port is returned as is.

    Raises:
        ValueError: the port is not a number, or the result is out of range.
    """
    if not offset:
        return address
    head, sep, port = address.rpartition(":")
    if not sep or "//" not in head or not port.isdigit():
        raise ValueError(f"cannot offset {address!r}: it has no port")
    moved = int(port) + offset
    if not 0 < moved < 65536:
        raise ValueError(f"{address!r} + {offset} is not a valid port")
    return f"{head}:{moved}"


@attrs.frozen(kw_only=True)
class ServeOptions(EdgeOptions):
    """A serving edge's options: ``EdgeOptions`` plus

    Attributes:
        port_offset: added to the address's port (one base address, several
            ports: base+0..3 for submissions, base+4 for queries, base+5 for subworkers).
        contexts: requests served at once.
        call_timeout: the longest an actor may take to answer a request
            (a parked query or a wait for queue room counts).
        reply_timeout: the longest a reply may wait for its client's
            connection (behind replies that client has not read) before that
            client is dropped: connection closed, its replies freed, one
            WARNING line, ``peers_dropped_slow`` counted.
        peer_reply_bytes: bytes of replies that may wait for one client's
            connection in the transport; more wait, uncopied, within
            ``reply_timeout``.
        max_senders: requesters whose sequences are remembered; one more
            starts a new epoch (each requester then learns it, one extra
            round trip each).
    """

    pattern: Literal["rep"] = "rep"  # type: ignore[assignment]
    mode: Literal["listen"] = "listen"
    port_offset: int = 0
    contexts: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    call_timeout: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))
    reply_timeout: float = attrs.field(
        default=DEFAULT_REPLY_TIMEOUT, validator=attrs.validators.gt(0)
    )
    peer_reply_bytes: int = attrs.field(
        default=DEFAULT_PEER_REPLY_BYTES, validator=attrs.validators.ge(1)
    )
    max_senders: int = attrs.field(default=DEFAULT_MAX_SENDERS, validator=attrs.validators.ge(1))

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "address", offset_address(self.address, self.port_offset))
        super().__attrs_post_init__()


@attrs.frozen(kw_only=True)
class ServeStats:
    """What a serving edge answered and what it refused.

    ``frames_stale`` counts request frames refused by the replay window
    (replays, NNG resends, frames for an earlier start), ``stale_by_peer``
    the same by peer address (at most ``STALE_PEERS`` of them, the rest
    under ``"other"``); ``epochs_told`` the first requests of new
    requesters, stamped for no epoch yet and answered with the epoch;
    ``epoch`` is the window's current epoch, in hex.
    """

    wire: str
    requests: int
    replies: int
    messages_in: int
    frames_dropped: int
    messages_unrouted: int
    in_progress: int
    unanswered: int
    peers_dropped_slow: int
    frames_stale: int
    stale_by_peer: dict[str, int]
    epochs_told: int
    senders: int
    epoch: str
    epochs_rotated: int


#: Peers counted one by one in ``ServeStats.stale_by_peer``.
STALE_PEERS = 32


class ServeEdge(_WireActor):
    """Answers request frames (NNG req/rep): the messages of each request go,
    by tag, to the wired actors as one ``Requests`` call per actor, and their
    answers go back in one reply frame. ``contexts`` requests are served at
    once; a bad frame is dropped, counted and logged, and gets no answer.

    A client that does not read its replies is dropped once a reply has
    waited ``reply_timeout`` for its connection: its connection is closed
    (freeing what was queued for it), one WARNING line names it, and
    ``peers_dropped_slow`` counts it. A reply waiting holds only its own
    context: other clients' replies never wait behind it.

    Answers too large for one frame are not sent: the requester gets an
    empty reply frame at once (``actors.requester`` raises ``Unanswered``),
    the event is counted and logged, and the actor wired under ``Unsent``,
    if any, gets the answers back as an ``Unsent`` message.
    """

    Options = ServeOptions

    def __init__(
        self, options: ServeOptions, context: ActorContext, *, wire: Wire | None = None
    ) -> None:
        super().__init__(options, context, wire=wire)
        self._requests = self._replies = self._messages_in = 0
        self._in_progress = 0
        self._peers_dropped_slow = 0
        self._unanswered_log = RateLimitedLog(log, what="unanswered", period=options.log_period)
        self._window = ReplayWindow(max_senders=options.max_senders)
        self._stale_log = RateLimitedLog(log, what="refused as stale", period=options.log_period)
        self._stale_by_peer: dict[str, int] = {}
        self._epochs_told = 0

    async def setup(self, nursery: trio.Nursery) -> str | None:
        if not self.refs:
            raise ConfigError(f"{self.name}: a serving edge needs at least one ref to route to")
        options = self.options
        self.wire = self._given_wire or await open_wire(
            options.address,
            pattern="rep",
            mode="listen",
            recv_max_size=options.max_frame_bytes,
            secured=self.framer.signed,
            tls=options.tls,
            contexts=options.contexts,
            reply_timeout=options.reply_timeout,
            peer_reply_bytes=options.peer_reply_bytes,
        )
        if self._given_wire is None:
            self._warn_unsigned(self.wire)
        for _ in range(options.contexts):
            nursery.start_soon(self._serve_loop, self.wire)
        return self.wire.name

    async def _serve_loop(self, wire: Wire) -> None:
        while True:
            # One call per request: nothing of it (its frame, its reply,
            # megabytes each) stays referenced while the loop waits.
            await self._serve_one(wire, await wire.receive_frame())

    async def _serve_one(self, wire: Wire, received: Received) -> None:
        self._requests += 1
        try:
            stamp, messages = self.framer.unpack_stamped(received.frame)
            if stamp is None:
                raise FrameError("request frame without a stamp")
        except FrameError as error:
            self._dropped_log.event("dropped frame from %s: %s", received.peer, error)
            await self._release(wire, received.reply_to)
            return
        stale = self._window.check(stamp)
        if stale is not None:
            await self._refuse_stale(wire, received.reply_to, received.peer, stamp, stale)
            return
        self._messages_in += len(messages)
        self._in_progress += 1
        try:
            replies = await self._serve_requests(messages, received.peer)
        except CallTimeout as error:
            # One slow answer must not take the edge down (and with it,
            # under one_for_all, everything): the requester gets no
            # answer and its own timeout tells it so.
            self._unanswered_log.event(
                "no answer to a request from %s: %s", received.peer, error
            )
            await self._release(wire, received.reply_to)
            return
        finally:
            self._in_progress -= 1
        # Replies to a client that does not read wait here, unbuilt.
        if not await self._reply_room(wire, received.reply_to):
            await self._release(wire, received.reply_to)
            return
        try:
            frame = self.framer.pack(replies)
        except FrameError as error:
            frame = await self._refuse_reply(messages, replies, received.peer, error)
        try:
            await wire.send_frame(frame, to=received.reply_to)
        except PeerDropped as error:
            self._dropped_slow(error)
            return
        self._replies += 1

    async def _refuse_reply(self, messages: list[Any], replies: list[Any], peer: str,
                            error: FrameError) -> bytes:
        """The frame that answers a request whose answers do not fit one: no
        answers (the requester learns at once that it will get none); the
        answers go back to the ``Unsent`` route, if one is wired."""
        self._unanswered_log.event(
            "no answer to a request from %s: %s; told the requester", peer, error)
        ref = self.refs.get(Unsent.__name__)
        if ref is not None:
            await ref.send(Unsent(tuple(messages), tuple(replies), peer, str(error)))
        return self.framer.pack(())

    async def _refuse_stale(self, wire: Wire, reply_to: object, peer: str,
                            stamp: Stamp, reason: str) -> None:
        """Answer a stale request with a refusal naming the current epoch:
        its requester re-stamps and resends (a replay's sender cannot). A
        new requester's first request (no epoch yet) is only counted."""
        epoch, sender, seq = stamp
        if not epoch:
            self._epochs_told += 1
        else:
            by_peer = self._stale_by_peer
            key = peer if peer in by_peer or len(by_peer) < STALE_PEERS else "other"
            by_peer[key] = by_peer.get(key, 0) + 1
            self._stale_log.event(
                "refused a stale request from %s (sender %x, sequence %d): %s",
                peer, sender, seq, reason)
        try:
            await wire.send_frame(self.framer.refusal((self._window.epoch, sender, seq)),
                                  to=reply_to)
        except PeerDropped as error:
            self._dropped_slow(error)

    async def _release(self, wire: Wire, reply_to: object) -> None:
        release = getattr(wire, "discard", None)
        if release is not None:
            await release(reply_to)

    async def _reply_room(self, wire: Wire, reply_to: object) -> bool:
        """Wait until the requester's connection has room (on a wire that
        bounds replies per connection, as a rep wire does); False: it has
        gone, or was dropped for not reading."""
        room = getattr(wire, "reply_room", None)
        if room is None:
            return True
        try:
            return bool(await room(reply_to))
        except PeerDropped as error:
            self._dropped_slow(error)
            return False

    def _dropped_slow(self, error: PeerDropped) -> None:
        self._peers_dropped_slow += 1
        log.warning("%s: %s", self.name, error)

    async def _serve_requests(self, messages: list[Any], peer: str) -> list[Any]:
        replies: list[Any] = []
        timeout = self.options.call_timeout
        for ref, run in self._runs(messages):
            replies += await ref.call(Requests(tuple(run), peer), timeout=timeout)
        return replies

    def stats_detail(self) -> ServeStats:
        return ServeStats(
            wire=self.wire.name if self.wire is not None else "not open",
            requests=self._requests,
            replies=self._replies,
            messages_in=self._messages_in,
            frames_dropped=self._dropped_log.total,
            messages_unrouted=self._unrouted,
            in_progress=self._in_progress,
            unanswered=self._unanswered_log.total,
            peers_dropped_slow=self._peers_dropped_slow,
            frames_stale=self._stale_log.total,
            stale_by_peer=dict(self._stale_by_peer),
            epochs_told=self._epochs_told,
            senders=len(self._window),
            epoch=f"{self._window.epoch:016x}",
            epochs_rotated=self._window.rotations,
        )
