"""Finding a control plane without an address: a probe/answer beacon over UDP.

A control plane runs a ``Beacon`` on UDP port 5550. A subworker or client
with no address calls ``discover``: it sends the probe ``b"FWDISC1 ?"`` to
127.0.0.1 (the same host), to 255.255.255.255 and to each interface's
directed broadcast address (the LAN), and takes the first answer,
``b"FWDISC1 " + JSON of an Announcement``, that speaks its protocol.

Answers are not authenticated: they say where the control plane is, never
its secret (only whether one is required), so a forged answer can misdirect
a prober but cannot get past a required secret. The beacon distrusts what it
receives: anything but a probe is dropped and counted, and it answers at
most ``ANSWERS_PER_SECOND`` probes so it cannot be used to flood a third
party. docs/discovery.md has the wire format.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import attrs
import cattrs
import trio

from actors import Actor
from actors.log import RateLimitedLog
from fastworker.messages import PROTOCOL_VERSION
from fastworker.stats import BeaconStats

log = logging.getLogger("fastworker.discovery")

DEFAULT_DISCOVERY_PORT = 5550
#: The environment variable that moves the discovery port (both ends).
PORT_VARIABLE = "FASTWORKER_DISCOVERY_PORT"
MAGIC = b"FWDISC1 "
PROBE = MAGIC + b"?"
#: The most probes a beacon answers per second (a bound on reflected traffic).
ANSWERS_PER_SECOND = 50
_UNSPECIFIED = ("0.0.0.0", "::", "*", "")
_SIOCGIFFLAGS, _SIOCGIFBRDADDR, _IFF_UP, _IFF_BROADCAST = 0x8913, 0x8919, 0x1, 0x2
_converter = cattrs.Converter()


@attrs.frozen(kw_only=True)
class Announcement:
    """What a beacon answers: where its control plane listens. Never the secret."""

    name: str
    host: str
    pid: int
    scheme: str
    listen_host: str
    port: int
    protocol: int
    secret_required: bool
    version: str

    def address_from(self, source_ip: str) -> str:
        """The base address a prober should dial, given the IP the answer came
        from (used when the control plane listens on every interface)."""
        host = source_ip if self.listen_host in _UNSPECIFIED else self.listen_host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"


def _split_address(address: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``scheme://host:port``; ``None`` for an address
    without a port (ipc, inproc). Raises ValueError for a malformed port."""
    parts = urlsplit(address)
    if not parts.scheme or parts.port is None:
        return None
    return parts.scheme, parts.hostname or "", parts.port


def _check_address(_instance: Any, _attribute: Any, value: str) -> None:
    try:
        _split_address(value)
    except ValueError:
        raise ValueError(f"address {value!r}: the port is not a number from 0 to 65535") from None


_check_port = attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(65535))


@attrs.frozen(kw_only=True)
class BeaconOptions:
    """A beacon's options.

    Attributes:
        address: the control plane's base address, e.g. ``tcp://0.0.0.0:5555``.
        port: the UDP port probes arrive on; 0 turns the beacon off. Usually
            ``"${FASTWORKER_DISCOVERY_PORT:-5550}"``.
        bind: the address to listen for probes on; empty means 127.0.0.1 when
            ``address`` is loopback, else 0.0.0.0.
        secret / secret_file: only to say whether a secret is required; the
            secret is never sent and the file never read.
        announce_name: the name announced; empty means this host's name.
    """

    address: str = attrs.field(validator=_check_address)
    port: int = attrs.field(default=DEFAULT_DISCOVERY_PORT, validator=_check_port)
    bind: str = ""
    secret: str = attrs.field(default="", repr=False)
    secret_file: str = ""
    announce_name: str = ""


class Beacon(Actor[Any]):
    """Answers discovery probes for the control plane at ``address``.

    It never stops its node: if its port is taken (another control plane on
    this host), it logs one warning and stays idle.
    """

    Options = BeaconOptions

    def __init__(self, options: BeaconOptions, context: Any) -> None:
        super().__init__(options, context)
        self._listening = ""
        self._counts = dict.fromkeys(("probes", "answers", "limited", "send_errors"), 0)
        self._dropped = RateLimitedLog(log, period=60.0)
        self._second, self._answered_this_second = -1, 0

    async def setup(self, nursery: trio.Nursery) -> str | None:
        options: BeaconOptions = self.options
        split = _split_address(options.address)
        if options.port == 0 or split is None:
            return "discovery off"
        scheme, host, port = split
        bind = options.bind or ("127.0.0.1" if _is_loopback(host) else "0.0.0.0")
        answer = MAGIC + json.dumps(_converter.unstructure(Announcement(
            name=options.announce_name or socket.gethostname(),
            host=socket.gethostname(),
            pid=os.getpid(),
            scheme=scheme,
            listen_host=host,
            port=port,
            protocol=PROTOCOL_VERSION,
            secret_required=bool(options.secret or options.secret_file),
            version=_version(),
        )), separators=(",", ":")).encode()
        where = f"udp://{bind}:{options.port}"
        sock = trio.socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        try:
            # No SO_REUSEADDR: on Linux it lets a second beacon share the port.
            await sock.bind((bind, options.port))
        except OSError as error:
            sock.close()
            log.warning(
                "%s: cannot answer discovery probes on %s (%s); another control plane on "
                "this host may hold UDP port %d: set %s to use another port",
                self.name, where, error.strerror or error, options.port, PORT_VARIABLE,
            )
            return f"discovery unavailable: cannot bind {where}"
        self._listening = where
        nursery.start_soon(self._answer_probes, sock, answer)
        return f"answering probes on {where}"

    async def _answer_probes(self, sock: trio.socket.SocketType, answer: bytes) -> None:
        with sock:
            while True:
                data, sender = await sock.recvfrom(2048)
                if data != PROBE:
                    self._dropped.event(
                        "%s: dropped datagram from %s: not a probe (%d bytes)",
                        self.name, sender[0], len(data),
                    )
                    continue
                self._counts["probes"] += 1
                second = int(trio.current_time())
                if second != self._second:
                    self._second, self._answered_this_second = second, 0
                if self._answered_this_second >= ANSWERS_PER_SECOND:
                    self._counts["limited"] += 1
                    continue
                self._answered_this_second += 1
                try:
                    await sock.sendto(answer, sender)
                    self._counts["answers"] += 1
                except OSError:
                    self._counts["send_errors"] += 1

    def stats_detail(self) -> BeaconStats:
        counts = self._counts
        return BeaconStats(
            listening=self._listening,
            available=bool(self._listening),
            probes_total=counts["probes"],
            answers_total=counts["answers"],
            dropped_total=self._dropped.total,
            limited_total=counts["limited"],
            send_errors_total=counts["send_errors"],
        )


class DiscoveryTimeout(Exception):
    """No control plane of this protocol answered in time.

    Attributes:
        port / targets / timeout: what was probed, for how long.
        mismatched: ``(address, protocol)`` of answers of another protocol.
    """

    def __init__(self, *, port: int, targets: Sequence[str], timeout: float,
                 mismatched: Sequence[tuple[str, int]] = ()) -> None:
        self.port, self.targets, self.timeout = port, list(targets), timeout
        self.mismatched = list(mismatched)
        super().__init__(
            f"no control plane answered discovery probes to {', '.join(targets)} on UDP "
            f"port {port} within {timeout:g} s{_mismatch_note(self.mismatched)}; set "
            "FASTWORKER_ADDRESS to give its address instead"
        )


def _mismatch_note(mismatched: Sequence[tuple[str, int]]) -> str:
    return "".join(
        f"; found a control plane at {address} speaking protocol {protocol}, "
        f"this is protocol {PROTOCOL_VERSION}"
        for address, protocol in mismatched
    )


def discovery_port() -> int:
    """``$FASTWORKER_DISCOVERY_PORT``, or ``DEFAULT_DISCOVERY_PORT`` if unset.

    Raises:
        ValueError: the variable is set but is not a port number.
    """
    text = os.environ.get(PORT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_DISCOVERY_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{PORT_VARIABLE}: expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def default_targets() -> list[str]:
    """Where ``discover`` sends probes: 127.0.0.1, 255.255.255.255 and the
    directed broadcast address of each up IPv4 interface (Linux; elsewhere,
    or for an interface that cannot be asked, none)."""
    targets = ["127.0.0.1", "255.255.255.255"]
    if not sys.platform.startswith("linux"):
        return targets
    import fcntl

    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return targets
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(sock, _SIOCGIFFLAGS, request), 16)[0]
                if flags & _IFF_UP and flags & _IFF_BROADCAST:
                    reply = fcntl.ioctl(sock, _SIOCGIFBRDADDR, request)
                    address = socket.inet_ntoa(reply[20:24])
                    if address not in targets and address != "0.0.0.0":
                        targets.append(address)
            except OSError:
                continue
    return targets


async def discover(
    *, port: int | None = None, timeout: float = 3.0, interval: float = 0.5,
    targets: Sequence[str] | None = None,
) -> tuple[str, Announcement]:
    """Find a control plane: probe ``targets`` on UDP ``port`` every
    ``interval`` seconds until one of this protocol answers. Runs under
    asyncio and trio.

    Returns:
        ``(base address to dial, the announcement)`` of the first answer.

    Raises:
        DiscoveryTimeout: none answered within ``timeout`` seconds.
        ValueError: ``port`` is None and ``$FASTWORKER_DISCOVERY_PORT`` is bad.
    """
    port = discovery_port() if port is None else port
    targets = default_targets() if targets is None else list(targets)
    mismatched: list[tuple[str, int]] = []
    found: tuple[str, Announcement] | None = None
    async with await anyio.create_udp_socket(socket.AF_INET, local_host="0.0.0.0") as sock:
        raw = sock.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                group.start_soon(_send_probes, sock, targets, port, interval)
                while found is None:
                    data, (source, _) = await sock.receive()
                    announcement = _parse_answer(data)
                    if announcement is None:
                        continue
                    address = announcement.address_from(source)
                    if announcement.protocol == PROTOCOL_VERSION:
                        found = (address, announcement)
                    elif (address, announcement.protocol) not in mismatched:
                        mismatched.append((address, announcement.protocol))
                group.cancel_scope.cancel()
    if found is None:
        raise DiscoveryTimeout(port=port, targets=targets, timeout=timeout, mismatched=mismatched)
    return found


async def _send_probes(
    sock: anyio.abc.UDPSocket, targets: Sequence[str], port: int, interval: float
) -> None:
    while True:
        for target in targets:
            try:
                await sock.sendto(PROBE, target, port)
            except (OSError, anyio.BrokenResourceError):  # anyio's trio backend wraps OSError
                pass  # unreachable network, no route for a broadcast: skip it
        await anyio.sleep(interval)


def _parse_answer(data: bytes) -> Announcement | None:
    """The announcement in an answer; ``None`` for anything else."""
    if not data.startswith(MAGIC):
        return None
    try:
        fields = json.loads(data[len(MAGIC):])
        if not isinstance(fields, dict):
            return None
        return _converter.structure(fields, Announcement)
    except Exception:  # any malformed answer (cattrs raises exception groups)
        return None


async def discover_forever(
    *, log: logging.Logger, what: str, port: int | None = None, every: float = 5.0,
    interval: float = 0.5, targets: Sequence[str] | None = None,
) -> tuple[str, Announcement]:
    """``discover`` until a control plane answers, logging a warning every
    ``every`` seconds without one (``what`` names the caller). Never gives up;
    cancel it to stop. Runs under asyncio and trio."""
    port = discovery_port() if port is None else port
    started = anyio.current_time()
    while True:
        probed = default_targets() if targets is None else list(targets)
        try:
            return await discover(port=port, timeout=every, interval=interval, targets=probed)
        except DiscoveryTimeout as error:
            note = _mismatch_note(error.mismatched)
        except OSError as error:  # no usable network at all, for now
            note = f"; {error}"
            await anyio.sleep(every)
        log.warning(
            "%s: still looking for a control plane (probing %s on UDP port %d for %g s)%s; "
            "set FASTWORKER_ADDRESS to give its address",
            what, ", ".join(probed), port, round(anyio.current_time() - started, 1), note,
        )


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _version() -> str:
    import fastworker  # here: fastworker's __init__ may be importing this module

    return str(getattr(fastworker, "__version__", ""))
