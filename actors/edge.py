"""Edge actors: where messages leave a process and where bytes enter one.

An ``Edge`` owns one wire (an NNG socket, or any ``actors.wire.Wire``).
Messages sent to the edge's ref are packed, a drained batch at a time, into
as few frames as the size limit allows and sent. Frames that arrive are
checked and decoded, and each message is passed on to the ref wired under
its tag (the message class's name), or to ``default``; one frame's messages
for the same target are sent together.

Edges distrust the network: a frame that is malformed, too large, of an
unknown version or fails authentication is dropped and counted, with a
rate-limited log line naming the peer, and the edge keeps running. A listen
on a non-loopback address is refused unless a shared secret or mutual TLS
(a ``tls`` table with ``ca_file``) authenticates its peers.

``InboundEdge`` and ``OutboundEdge`` are the same actor with defaults for
one direction: an inbound edge listens and must route what it receives; an
outbound edge dials and only sends. The serving edge (request/reply, with
replay refusal and per-client output bounds) is ``actors.serve``; it
shares ``EdgeOptions`` and the framing, routing and logging kept here.
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
from actors.errors import ConfigError, FrameError
from actors.frame import DEFAULT_MAX_FRAME_BYTES, Framer
from actors.log import RateLimitedLog
from actors.mailbox import Ref
from actors.nng import (
    DEFAULT_BUFFER_FRAMES,
    TlsOptions,
    check_listen_address,
    open_wire,
)
from actors.secret import check_secret_choice, frame_secret, shared_secret
from actors.tls import resolve_tls
from actors.wire import Wire

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
    buffer_frames: int = attrs.field(
        default=DEFAULT_BUFFER_FRAMES, validator=attrs.validators.ge(0)
    )
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


class WireActor(Actor[Any]):
    """What every edge has (``actors.serve.ServeEdge`` too): a framer for
    its codec and secret, a wire it opens itself (or is given, in tests and
    Python compositions) and closes when it stops, and a rate-limited log of
    dropped frames."""

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


class Edge(WireActor):
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
