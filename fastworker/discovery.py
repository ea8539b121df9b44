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
import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from actors import Actor
from actors.log import RateLimitedLog
from actors.secret import shared_secret, signs
from fastworker.messages import PROTOCOL_VERSION
from fastworker.probe import (
    DEFAULT_DISCOVERY_PORT,
    PORT_VARIABLE,
    PROBE,
    Announcement,
    encode_answer,
)
from fastworker.stats import BeaconStats
from fastworker.version import VERSION

log = logging.getLogger("fastworker.discovery")


#: The most probes a beacon answers per second (a bound on reflected traffic).
ANSWERS_PER_SECOND = 50


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
        secret / secret_file: only to say whether a secret is required
            (``actors.secret.signs``: the per-host ``"auto"`` one too); the
            secret is never sent and the file never read.
        announce_name: the name announced; empty means this host's name.
    """

    address: str = attrs.field(validator=_check_address)
    port: int = attrs.field(default=DEFAULT_DISCOVERY_PORT, validator=_check_port)
    bind: str = ""
    secret: str = attrs.field(default="", repr=False)
    secret_file: str = ""
    announce_name: str = ""


def _secret_required(options: BeaconOptions, scheme: str) -> bool:
    """Whether frames must be signed, as far as the beacon can tell: a secret
    set on purpose, or the per-host one on a plain TCP control plane. Over
    TLS the per-host secret gives way to mutual TLS, which the beacon cannot
    see, so it announces none: a peer that has neither is refused anyway."""
    if shared_secret(options.secret, options.secret_file):
        return True
    return signs(options.secret, options.secret_file) and not scheme.startswith("tls+")


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
        answer = encode_answer(Announcement(
            name=options.announce_name or socket.gethostname(),
            host=socket.gethostname(),
            pid=os.getpid(),
            scheme=scheme,
            listen_host=host,
            port=port,
            protocol=PROTOCOL_VERSION,
            secret_required=_secret_required(options, scheme),
            version=VERSION,
        ))
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


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

