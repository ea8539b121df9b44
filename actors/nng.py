"""NNG sockets as wires: options checked, sockets opened, wires returned.

Edge actors move frames through an ``actors.wire.Wire``; ``open_wire`` makes
one from an NNG socket (push, pull, pair, pair1, bus or rep) that listens or
dials, driven by its descriptors (``io="poll"``) or by pynng's aio
(``io="async"``; a rep wire goes its own way, ``actors.nng_rep``);
``open_request_wire`` makes the client of a
rep wire, a ``RequestWire`` that runs under asyncio and trio. The wires
themselves live in ``actors.nng_wire`` (``NngWire``, with
``actors.nng_rep`` for a rep socket's contexts) and ``actors.nng_req``
(``RequestWire``), and are re-exported here; these four and
``actors.nng_io`` (the NNG calls of their hot paths) are the only modules
that import pynng (TLS settings and their rule are ``actors.tls``). See
docs/transport.md. A sent
frame may still be lost when a peer restarts: delivery rests on the acks and
redelivery of the layers above.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Callable
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import anyio
import pynng  # type: ignore[import-untyped]
import trio

from actors.errors import ConfigError
from actors.nng_req import RequestWire as RequestWire
from actors.nng_req import req_socket
from actors.nng_wire import BY_CONTEXT, CAN_RECEIVE, CAN_SEND
from actors.nng_wire import NngWire as NngWire
from actors.tls import TlsOptions as TlsOptions
from actors.tls import tls_problems

__all__ = [
    "NngWire",
    "RequestWire",
    "TlsOptions",
    "check_listen_address",
    "is_local_address",
    "open_request_wire",
    "open_wire",
]

Pattern = Literal["push", "pull", "pair", "pair1", "bus", "rep"]
Mode = Literal["listen", "dial"]
Io = Literal["poll", "async"]

#: First wait, in ms, before a dialer retries; it doubles up to the max.
RECONNECT_MIN_MS: Final = 100
#: Longest wait, in ms, between two reconnection attempts.
RECONNECT_MAX_MS: Final = 2000
#: Frames a socket queues each way. NNG's defaults (0 or 1 for most patterns)
#: make every send wait for the previous write; 16 doubles poll throughput.
DEFAULT_BUFFER_FRAMES: Final = 16
#: Requests a rep wire holds at once, or a request wire has in flight.
DEFAULT_CONTEXTS: Final = 8
#: Seconds a request goes unanswered, on a live connection, before it is sent
#: again. Longer than any request may legitimately wait at the server (every
#: copy takes a server context); a dropped connection resends at once anyway.
DEFAULT_RESEND_TIME: Final = 60.0
#: Seconds a rep wire's reply may wait for its connection (behind replies
#: the peer is not taking) before that peer is dropped.
DEFAULT_REPLY_TIMEOUT: Final = 10.0
#: Bytes of replies a rep wire lets wait for one connection inside NNG.
DEFAULT_PEER_REPLY_BYTES: Final = 1024 * 1024
_MAX_CONTEXTS: Final = 4096
_MAX_MS: Final = 2**31 - 1  # NNG durations are int32 milliseconds

_SOCKETS: Final[dict[str, Callable[..., Any]]] = {
    "push": pynng.Push0,
    "pull": pynng.Pull0,
    "pair": pynng.Pair0,
    # Polyamorous, so one listener answers many dialers by pipe.
    "pair1": lambda **options: pynng.Pair1(polyamorous=True, **options),
    "bus": pynng.Bus0,
    "rep": pynng.Rep0,
    "req": req_socket,  # open_request_wire's, not open_wire's
}
# NNG counts pair1's 4-byte hop count, and req/rep's 4-byte request id (one
# per hop: we have one), against recv_max_size.
_HEADER_BYTES: Final = {"pair1": 4, "rep": 4, "req": 4}
_LOCAL_SCHEMES: Final = ("ipc://", "inproc://", "abstract://")


def check_listen_address(address: str, *, secured: bool) -> None:
    """Refuse to listen beyond this host when peers are not authenticated.

    Args:
        address: the NNG address to listen on.
        secured: whether a shared secret or mutual TLS (a CA that signed
            every client's certificate) authenticates the peers. TLS without
            a client CA does not: it lets any client in.

    Raises:
        ConfigError: ``address`` is not loopback, ipc or inproc, and ``secured``
            is false. The message says how to fix it.
    """
    if secured or is_local_address(address):
        return
    parts = urlsplit(address)
    port = parts.netloc.rpartition(":")[2] if ":" in parts.netloc else ""
    loopback = parts._replace(netloc="127.0.0.1" + (f":{port}" if port else "")).geturl()
    raise ConfigError(
        f"refusing to listen on {address} without a shared secret or mutual TLS: set a "
        "secret (FASTWORKER_SECRET, or the edge's `secret` / `secret_file` option), use "
        "mutual TLS (a tls+tcp:// address with a client CA: FASTWORKER_TLS_CA, or the "
        f"edge's `tls.ca_file`), or listen on a loopback address such as {loopback}"
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
    contexts: int = DEFAULT_CONTEXTS,
    reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
    peer_reply_bytes: int = DEFAULT_PEER_REPLY_BYTES,
) -> NngWire:
    """Open an NNG socket on ``address`` and wrap it as a wire.

    A listener is bound when this returns. A dialer never waits for its peer:
    NNG connects in the background, reconnects whenever the link drops, and
    sends wait until a peer is there.

    Args:
        address: e.g. ``tcp://127.0.0.1:5555`` (port 0 picks a free one),
            ``tls+tcp://...``, ``ipc:///run/fw.sock``, ``inproc://name``.
        pattern: ``push``, ``pull``, ``pair``, ``pair1`` (one listener, many
            dialers, answered through ``Received.reply_to``), ``bus``, or
            ``rep`` (answers each request of ``open_request_wire`` clients:
            ``send_frame(reply, to=received.reply_to)`` is required).
        mode: ``listen`` or ``dial``.
        recv_max_size: the largest frame accepted, in bytes. A peer sending a
            larger one is disconnected and the frame dropped.
        secured: frames are authenticated above this layer (shared secret).
        tls: certificates for a ``tls+tcp://`` address; a listener's counts as
            secured only with ``ca_file`` (mutual TLS). Unset settings
            (``TlsOptions()``) mean no TLS.
        io: ``poll`` (descriptors, faster) or ``async`` (pynng's aio). A
            rep wire ignores it: it takes requests by the socket's
            descriptor and sends most replies in the caller's call
            (``actors.nng_rep``).
        buffer_frames: frames queued each way (0 to 8192), beyond those in
            flight on each connection; memory is bounded by about
            ``buffer_frames * recv_max_size``. Queued frames die with a peer.
            Not used by rep, which takes one request per connection at a time.
        contexts: rep only: requests held at once (1 to 4096), each from its
            receipt until it is answered; ``receive_frame`` waits while all are.
        reply_timeout: rep only: seconds a reply may wait for its connection
            (behind replies the peer has not taken) before the peer is
            dropped: its connection closed, its queued replies freed, and
            ``send_frame`` raising ``PeerDropped``. ``math.inf``: never.
        peer_reply_bytes: rep only: bytes of replies that may wait inside
            NNG for one connection; more wait uncopied, within ``reply_timeout``.

    Raises:
        ConfigError: an option is wrong, or a non-loopback listener is unsecured.
        OSError: NNG could not listen or dial (address in use, ...).
    """
    choices: dict[str, tuple[str, list[str]]] = {
        "pattern": (pattern, sorted(set(_SOCKETS) - {"req"})),
        "mode": (mode, ["dial", "listen"]),
        "io": (io, ["async", "poll"]),
    }
    problems = [
        f"unknown {what} {value!r}; expected one of {', '.join(known)}"
        for what, (value, known) in choices.items()
        if value not in known
    ]
    if not 0 <= buffer_frames <= 8192:
        problems.append(f"buffer_frames must be within 0..8192, got {buffer_frames}")
    if not reply_timeout > 0:  # also refuses NaN
        problems.append(f"reply_timeout must be positive seconds or math.inf, got {reply_timeout}")
    if peer_reply_bytes < 1:
        problems.append(f"peer_reply_bytes must be at least 1, got {peer_reply_bytes}")
    problems += _common_problems(address, mode, recv_max_size, contexts, tls)
    if problems:
        raise ConfigError(f"{address}: {problem}" for problem in problems)
    tls = tls if tls is not None and tls.configured else None
    if mode == "listen":
        check_listen_address(address, secured=secured or (tls is not None and tls.mutual))
    # Binding, and reading and parsing certificates, happen off the trio thread.
    max_size = recv_max_size + _HEADER_BYTES.get(pattern, 0)
    socket, name = await trio.to_thread.run_sync(
        _open_socket, address, pattern, mode, max_size, buffer_frames, tls
    )
    return NngWire(
        socket,
        name=name,
        address=address,
        pattern=pattern,
        io=io,
        contexts=contexts,
        reply_timeout=reply_timeout,
        peer_reply_bytes=peer_reply_bytes,
    )


async def open_request_wire(
    address: str,
    *,
    recv_max_size: int,
    contexts: int = DEFAULT_CONTEXTS,
    resend_time: float | None = None,
    tls: TlsOptions | None = None,
    connect_timeout: float | None = None,
) -> RequestWire:
    """Dial a ``rep`` wire at ``address`` and return a client for it.

    Never waits for the server: NNG connects in the background and
    reconnects whenever the link drops; requests wait until it is there.
    Runs under asyncio and trio.

    Args:
        address: the rep listener, e.g. ``tcp://127.0.0.1:5555``.
        recv_max_size: the largest reply accepted, in bytes. A larger one
            closes the connection, and the request goes out again.
        contexts: requests in flight at once (1 to 4096).
        resend_time: seconds without a reply, on a connection that stays up,
            before the request is sent again; ``None`` means
            ``DEFAULT_RESEND_TIME`` (60 s), ``math.inf`` never. Whatever the
            value, a request whose connection drops (a server restart) is
            sent again as soon as a connection is back.
        tls: certificates for a ``tls+tcp://`` address (``ca_file`` needed).
        connect_timeout: until the wire has first connected, the longest a
            request waits for a connection before ``NotConnected`` (it is
            not sent); ``None`` waits as long as the request's timeout.
            Once connected, a connection lost later is waited for again
            (a server restart is ridden through).

    Raises:
        ConfigError: an option is wrong.
        OSError: NNG could not dial.
    """
    resend = DEFAULT_RESEND_TIME if resend_time is None else resend_time
    problems = _common_problems(address, "dial", recv_max_size, contexts, tls)
    if not resend > 0:  # also refuses NaN
        problems.append(f"resend_time must be positive seconds or math.inf, got {resend_time}")
    if connect_timeout is not None and not connect_timeout > 0:
        problems.append(f"connect_timeout must be positive seconds or None, got {connect_timeout}")
    if problems:
        raise ConfigError(f"{address}: {problem}" for problem in problems)
    tls = tls if tls is not None and tls.configured else None
    resend_ms = _MAX_MS if math.isinf(resend) else min(_MAX_MS, max(1, round(resend * 1000)))
    socket, name = await anyio.to_thread.run_sync(
        functools.partial(
            _open_socket,
            address,
            "req",
            "dial",
            recv_max_size + _HEADER_BYTES["req"],
            0,
            tls,
            resend_ms=resend_ms,
        )
    )
    return RequestWire(socket, name=name, contexts=contexts, connect_timeout=connect_timeout)


def _common_problems(
    address: str, mode: str, recv_max_size: int, contexts: int, tls: TlsOptions | None
) -> list[str]:
    problems = []
    if recv_max_size <= 0:
        problems.append(f"recv_max_size must be a positive int, got {recv_max_size}")
    if not 1 <= contexts <= _MAX_CONTEXTS:
        problems.append(f"contexts must be within 1..{_MAX_CONTEXTS}, got {contexts}")
    problems += tls_problems(address, tls, mode)
    return problems


def is_local_address(address: str) -> bool:
    """Whether ``address`` reaches this host only: ``ipc://``, ``inproc://``,
    or a loopback host (``127.0.0.1``, ``::1``, ``localhost``)."""
    return address.startswith(_LOCAL_SCHEMES) or _is_loopback(address)


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
    # NNG verifies no name unless told one: the address's host (a DNS name,
    # or an IP address matched against the certificate's IP entries).
    config = pynng.TLSConfig(
        pynng.TLSConfig.MODE_SERVER if server else pynng.TLSConfig.MODE_CLIENT,
        server_name=None if server else tls.server_name or urlsplit(address).hostname,
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
    address: str,
    pattern: str,
    mode: str,
    max_size: int,
    buffer_frames: int,
    tls: TlsOptions | None,
    **options: Any,
) -> tuple[Any, str]:
    config = None if tls is None else _tls_config(address, tls, mode)
    socket = _SOCKETS[pattern](
        recv_max_size=max_size,
        reconnect_time_min=RECONNECT_MIN_MS,
        reconnect_time_max=RECONNECT_MAX_MS,
        **options,
    )
    try:
        if pattern in CAN_RECEIVE and pattern not in BY_CONTEXT:
            socket.recv_buffer_size = buffer_frames
        if pattern in CAN_SEND and pattern not in BY_CONTEXT:
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
