"""NNG sockets as wires: the one module that imports pynng.

Edge actors move frames through an ``actors.wire.Wire``; ``open_wire`` makes
one from an NNG socket (push, pull, pair, pair1 or bus) that listens or dials,
driven by its descriptors (``io="poll"``) or by pynng's aio (``io="async"``);
see docs/transport.md. A sent frame may still be lost when a peer restarts:
delivery rests on the acks and redelivery of the layers above.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Callable
from typing import Any, Final, Literal, final
from urllib.parse import urlsplit

import attrs
import pynng  # type: ignore[import-untyped]
import trio

from actors.errors import ConfigError
from actors.wire import Received

__all__ = ["NngWire", "TlsOptions", "check_listen_address", "open_wire"]

Pattern = Literal["push", "pull", "pair", "pair1", "bus"]
Mode = Literal["listen", "dial"]
Io = Literal["poll", "async"]

#: First wait, in ms, before a dialer retries; it doubles up to the max.
RECONNECT_MIN_MS: Final = 100
#: Longest wait, in ms, between two reconnection attempts.
RECONNECT_MAX_MS: Final = 2000
#: Frames a socket queues each way. NNG's defaults (0 or 1 for most patterns)
#: make every send wait for the previous write; 16 doubles poll throughput.
DEFAULT_BUFFER_FRAMES: Final = 16

_SOCKETS: Final[dict[str, Callable[..., Any]]] = {
    "push": pynng.Push0,
    "pull": pynng.Pull0,
    "pair": pynng.Pair0,
    # Polyamorous, so one listener answers many dialers by pipe.
    "pair1": lambda **options: pynng.Pair1(polyamorous=True, **options),
    "bus": pynng.Bus0,
}
_CAN_SEND: Final = frozenset({"push", "pair", "pair1", "bus"})
_CAN_RECEIVE: Final = frozenset({"pull", "pair", "pair1", "bus"})
# NNG counts pair1's 4-byte hop-count header against recv_max_size.
_HEADER_BYTES: Final = {"pair1": 4}
_LOCAL_SCHEMES: Final = ("ipc://", "inproc://", "abstract://")


@final
@attrs.frozen(kw_only=True)
class TlsOptions:
    """TLS for a ``tls+tcp://`` wire: PEM file paths, mapped onto ``pynng.TLSConfig``.

    A listener needs ``cert_file`` and ``key_file``; given ``ca_file`` too, it
    demands from every dialer a certificate that CA signed (mutual TLS). A
    dialer needs ``ca_file`` to verify the listener, whose certificate must name
    ``server_name`` (a DNS name: NNG does not match IP addresses); its own
    certificate and key matter only to a listener that demands them.
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    server_name: str | None = None


def check_listen_address(address: str, *, secured: bool) -> None:
    """Refuse to listen beyond this host when frames are not authenticated.

    Args:
        address: the NNG address to listen on.
        secured: whether a shared secret or TLS protects the wire.

    Raises:
        ConfigError: ``address`` is not loopback, ipc or inproc, and ``secured``
            is false. The message says how to fix it.
    """
    if secured or address.startswith(_LOCAL_SCHEMES) or _is_loopback(address):
        return
    parts = urlsplit(address)
    port = parts.netloc.rpartition(":")[2] if ":" in parts.netloc else ""
    loopback = parts._replace(netloc="127.0.0.1" + (f":{port}" if port else "")).geturl()
    raise ConfigError(
        f"refusing to listen on {address} without a shared secret: set one "
        "(FASTWORKER_SECRET, or the edge's `secret` / `secret_file` option), "
        f"configure TLS, or listen on a loopback address such as {loopback}"
    )


async def open_wire(
    address: str,
    *,
    pattern: Pattern,
    mode: Mode,
    recv_max_size: int,
    secured: bool = False,
    tls: TlsOptions | None = None,
    io: Io = "poll",
    buffer_frames: int = DEFAULT_BUFFER_FRAMES,
) -> NngWire:
    """Open an NNG socket on ``address`` and wrap it as a wire.

    A listener is bound when this returns. A dialer never waits for its peer:
    NNG connects in the background, reconnects whenever the link drops, and
    sends wait until a peer is there.

    Args:
        address: e.g. ``tcp://127.0.0.1:5555`` (port 0 picks a free one),
            ``tls+tcp://...``, ``ipc:///run/fw.sock``, ``inproc://name``.
        pattern: ``push``, ``pull``, ``pair``, ``pair1`` (one listener, many
            dialers, answered through ``Received.reply_to``) or ``bus``.
        mode: ``listen`` or ``dial``.
        recv_max_size: the largest frame accepted, in bytes. A peer sending a
            larger one is disconnected and the frame dropped.
        secured: frames are authenticated above this layer (shared secret).
        tls: certificates for a ``tls+tcp://`` address; counts as secured.
        io: ``poll`` (descriptors, faster) or ``async`` (pynng's aio).
        buffer_frames: frames queued each way (0 to 8192), beyond those in
            flight on each connection; memory is bounded by about
            ``buffer_frames * recv_max_size``. Queued frames die with a peer.

    Raises:
        ConfigError: an option is wrong, or a non-loopback listener is unsecured.
        OSError: NNG could not listen or dial (address in use, ...).
    """
    choices: dict[str, tuple[str, list[str]]] = {
        "pattern": (pattern, sorted(_SOCKETS)),
        "mode": (mode, ["dial", "listen"]),
        "io": (io, ["async", "poll"]),
    }
    problems = [
        f"unknown {what} {value!r}; expected one of {', '.join(known)}"
        for what, (value, known) in choices.items()
        if value not in known
    ]
    if recv_max_size <= 0:
        problems.append(f"recv_max_size must be a positive int, got {recv_max_size}")
    if not 0 <= buffer_frames <= 8192:
        problems.append(f"buffer_frames must be within 0..8192, got {buffer_frames}")
    if address.startswith("tls+") != (tls is not None):
        problems.append("TLS options go with, and only with, a tls+tcp:// address")
    if tls is not None and (tls.cert_file is None) != (tls.key_file is None):
        problems.append("TLS cert_file and key_file go together")
    elif tls is not None and mode == "listen" and tls.cert_file is None:
        problems.append("a TLS listener needs cert_file and key_file")
    if tls is not None and mode == "dial" and tls.ca_file is None:
        problems.append("a TLS dialer needs ca_file to verify the listener")
    if problems:
        raise ConfigError(f"{address}: {problem}" for problem in problems)
    if mode == "listen":
        check_listen_address(address, secured=secured or tls is not None)
    # Binding, and reading and parsing certificates, happen off the trio thread.
    max_size = recv_max_size + _HEADER_BYTES.get(pattern, 0)
    socket, name = await trio.to_thread.run_sync(
        _open_socket, address, pattern, mode, max_size, buffer_frames, tls
    )
    return NngWire(socket, name=name, address=address, pattern=pattern, io=io)


@final
class NngWire:
    """A ``Wire`` over one pynng socket. Make one with ``open_wire``.

    Any number of tasks may send and receive at once. With ``io="async"`` a
    send that NNG has started is never cancelled (pynng leaks the frame if it
    is): a cancelled ``send_frame`` returns once NNG takes the frame or the
    wire closes. With ``io="poll"`` every wait is cancellable.
    """

    def __init__(self, socket: Any, *, name: str, address: str, pattern: str, io: str) -> None:
        self._socket = socket
        self._name = name
        self._scheme = address.partition("://")[0]
        self._pattern = pattern
        self._poll = io == "poll"
        self._closed = False
        # NNG's descriptors turn *readable* when the socket can receive, and
        # when it can send: send_fd never reports writable.
        self._recv_fd = socket.recv_fd if self._poll and pattern in _CAN_RECEIVE else -1
        self._send_fd = socket.send_fd if self._poll and pattern in _CAN_SEND else -1
        # trio lets one task at a time wait on a descriptor.
        self._recv_wait = trio.Lock()
        self._send_wait = trio.Lock()
        self._peers: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    @property
    def name(self) -> str:
        """``listening on tcp://127.0.0.1:40123`` (the real port) or ``dialing ...``."""
        return self._name

    async def send_frame(self, frame: bytes, *, to: object = None) -> None:
        """Hand one frame to NNG; waits while no peer can take it.

        Args:
            frame: the bytes to send.
            to: a ``Received.reply_to`` from this pair1 wire, to answer that
                peer only; frames to a peer that has gone are dropped.

        Raises:
            trio.ClosedResourceError: the wire is closed, before or while waiting.
            ConfigError: this pattern cannot send, or ``to`` is not a pair1 peer.
        """
        self._check(_CAN_SEND, "send")
        if to is not None and (self._pattern != "pair1" or not isinstance(to, pynng.Pipe)):
            raise ConfigError(f"{self._name}: to= takes a pair1 Received.reply_to, got {to!r}")
        message = frame if to is None else pynng.Message(frame, to)
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if not self._poll:
                with trio.CancelScope(shield=True):
                    await (self._socket.asend if to is None else self._socket.asend_msg)(message)
                await trio.lowlevel.checkpoint_if_cancelled()
                return
            send = self._socket.send if to is None else self._socket.send_msg
            while True:
                try:
                    send(message, block=False)
                    break
                except pynng.TryAgain:
                    await self._wait(self._send_wait, self._send_fd)
        except pynng.Closed:
            raise self._closed_error() from None
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_frame(self) -> Received:
        """Wait for the next frame from any peer.

        Raises:
            trio.ClosedResourceError: the wire is closed, before or while waiting.
            ConfigError: this pattern cannot receive.
        """
        self._check(_CAN_RECEIVE, "receive")
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if self._poll:
                while True:
                    try:
                        message = self._socket.recv_msg(block=False)
                        break
                    except pynng.TryAgain:
                        await self._wait(self._recv_wait, self._recv_fd)
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                message = await self._socket.arecv_msg()
        except pynng.Closed:
            raise self._closed_error() from None
        pipe = message.pipe
        return Received(message.bytes, self._peer(pipe), pipe if self._pattern == "pair1" else None)

    async def aclose(self) -> None:
        """Close the socket; tasks waiting in send or receive wake with ClosedResourceError."""
        if not self._closed:
            self._closed = True
            for fd in (self._recv_fd, self._send_fd):
                if fd >= 0:
                    trio.lowlevel.notify_closing(fd)
            # nng_close waits for the socket's pipes to wind down.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._socket.close)
        await trio.lowlevel.checkpoint()

    def _check(self, can: frozenset[str], verb: str) -> None:
        if self._closed:
            raise self._closed_error()
        if self._pattern not in can:
            raise ConfigError(f"{self._name}: a {self._pattern} wire cannot {verb} frames")

    def _closed_error(self) -> trio.ClosedResourceError:
        return trio.ClosedResourceError(f"wire {self._name} is closed")

    async def _wait(self, lock: trio.Lock, fd: int) -> None:
        async with lock:
            if self._closed:  # the descriptor may already be gone
                raise self._closed_error()
            await trio.lowlevel.wait_readable(fd)

    def _peer(self, pipe: Any) -> str:
        peer = None if pipe is None else self._peers.get(pipe)
        if peer is None:
            try:
                remote = str(pipe.remote_address)  # inproc names come with their scheme
                peer = remote if "://" in remote else f"{self._scheme}://{remote}"
                self._peers[pipe] = peer
            except (AttributeError, pynng.NNGException):  # no pipe, or it closed meanwhile
                peer = f"{self._scheme}://(unknown peer)"
        return peer


def _is_loopback(address: str) -> bool:
    host = urlsplit(address).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_config(address: str, tls: TlsOptions, mode: str) -> Any:
    def read(what: str, path: str) -> str:
        try:
            with open(path, encoding="ascii") as file:
                return file.read()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{address}: cannot read TLS {what} {path}: {error}") from None

    server = mode == "listen"
    config = pynng.TLSConfig(
        pynng.TLSConfig.MODE_SERVER if server else pynng.TLSConfig.MODE_CLIENT,
        server_name=tls.server_name,
    )
    try:
        # With a CA the peer must show a certificate it signed; without, none is asked.
        if tls.ca_file is not None:
            config.set_ca_chain(read("ca_file", tls.ca_file))
        required = tls.ca_file is not None
        config.set_auth_mode(
            pynng.TLSConfig.AUTH_MODE_REQUIRED if required else pynng.TLSConfig.AUTH_MODE_NONE
        )
        if tls.cert_file is not None and tls.key_file is not None:
            config.set_own_cert(read("cert_file", tls.cert_file), read("key_file", tls.key_file))
    except pynng.NNGException as error:
        raise ConfigError(f"{address}: TLS files not usable as PEM certificates: {error}") from None
    return config


def _open_socket(
    address: str, pattern: str, mode: str, max_size: int, buffer_frames: int, tls: TlsOptions | None
) -> tuple[Any, str]:
    config = None if tls is None else _tls_config(address, tls, mode)
    socket = _SOCKETS[pattern](
        recv_max_size=max_size,
        reconnect_time_min=RECONNECT_MIN_MS,
        reconnect_time_max=RECONNECT_MAX_MS,
    )
    try:
        if pattern in _CAN_RECEIVE:
            socket.recv_buffer_size = buffer_frames
        if pattern in _CAN_SEND:
            socket.send_buffer_size = buffer_frames
        if config is not None:
            socket.tls_config = config
        if mode == "listen":
            return socket, f"listening on {socket.listen(address).url}"
        socket.dial(address, block=False)
        return socket, f"dialing {address}"
    except (pynng.AddressInvalid, pynng.NotSupported) as error:
        socket.close()
        raise ConfigError(
            f"{address}: not an address NNG can {mode} on ({error}); expected e.g. "
            "tcp://127.0.0.1:5555, tls+tcp://host:5555, ipc:///path or inproc://name"
        ) from None
    except pynng.NNGException as error:
        socket.close()
        raise OSError(f"cannot {mode} on {address}: {error}") from error
