"""The serving edge: answers request frames (NNG req/rep) with its actors' answers.

A ``ServeEdge`` listens on one rep wire and serves ``contexts`` requests at
once. Each request frame is checked like any edge's frame (``actors.edge``),
then against the replay window (``actors.freshness``): a frame seen before,
or stamped for an earlier start of the process, is refused with a small
signed refusal its requester re-stamps and resends after. The messages of a
good frame go, by tag, to the wired actors as one ``Requests`` call per
actor, and their answers go back in one reply frame.

What waits for each client's connection is bounded (``reply_timeout``,
``peer_reply_bytes``): a client that does not read its replies is dropped,
logged and counted, and never holds up the others' replies. Answers too
large for one frame are refused at once and handed back as ``Unsent``.

It logs under ``actors.edge``, like every edge, so one logger setting
covers all of them.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import attrs
import trio

from actors.actor import ActorContext
from actors.edge import EdgeOptions, WireActor, offset_address
from actors.errors import CallTimeout, ConfigError, FrameError, PeerDropped
from actors.frame import Stamp
from actors.freshness import DEFAULT_MAX_SENDERS, ReplayWindow
from actors.log import RateLimitedLog
from actors.nng import DEFAULT_PEER_REPLY_BYTES, DEFAULT_REPLY_TIMEOUT, open_wire
from actors.requests import Requests, Unsent
from actors.wire import Received, Wire

__all__ = ["STALE_PEERS", "ServeEdge", "ServeOptions", "ServeStats", "peer_host"]

log = logging.getLogger("actors.edge")


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
    the same by peer host (``tcp://10.0.0.7``: at most ``STALE_PEERS`` of
    them, the rest under ``"other"``); ``epochs_told`` the first requests of new
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


#: Peer hosts counted one by one in ``ServeStats.stale_by_peer``.
STALE_PEERS = 32


class ServeEdge(WireActor):
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
            host = peer_host(peer)
            key = host if host in by_peer or len(by_peer) < STALE_PEERS else "other"
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


def peer_host(peer: str) -> str:
    """A peer's address without its port (``tcp://10.0.0.7:40514`` ->
    ``tcp://10.0.0.7``): each connection of one host has a port of its own."""
    scheme, sep, rest = peer.partition("://")
    if not sep or rest.startswith("/") or ":" not in rest.lstrip("["):
        return peer
    host, _, port = rest.rpartition(":")
    return f"{scheme}://{host}" if port.isdigit() else peer
