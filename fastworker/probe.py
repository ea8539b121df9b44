"""Finding a control plane: the discovery protocol and the prober's side.

A subworker or client with no address calls ``discover``: it sends the
probe ``b"FWDISC1 ?"`` to 127.0.0.1, to 255.255.255.255 and to each
interface's directed broadcast address, and takes the first answer,
``b"FWDISC1 " + JSON of an Announcement``, that speaks its protocol. The
answering side is the control plane's ``Beacon`` (``fastworker.discovery``);
docs/discovery.md has the wire format.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Sequence

import anyio
import anyio.abc
import attrs
import cattrs

from fastworker.errors import DiscoveryTimeout
from fastworker.messages import PROTOCOL_VERSION

__all__ = [
    "Announcement",
    "default_targets",
    "discover",
    "discover_forever",
    "discovery_port",
    "encode_answer",
]

DEFAULT_DISCOVERY_PORT = 5550
#: The environment variable that moves the discovery port (both ends).
PORT_VARIABLE = "FASTWORKER_DISCOVERY_PORT"
MAGIC = b"FWDISC1 "
PROBE = MAGIC + b"?"
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


def encode_answer(announcement: Announcement) -> bytes:
    """A beacon's answer: the magic, then the announcement as compact JSON."""
    fields = _converter.unstructure(announcement)
    return MAGIC + json.dumps(fields, separators=(",", ":")).encode()


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
            note = DiscoveryTimeout.note(error.mismatched)
        except OSError as error:  # no usable network at all, for now
            note = f"; {error}"
            await anyio.sleep(every)
        log.warning(
            "%s: still looking for a control plane (probing %s on UDP port %d for %g s)%s; "
            "set FASTWORKER_ADDRESS to give its address",
            what, ", ".join(probed), port, round(anyio.current_time() - started, 1), note,
        )
