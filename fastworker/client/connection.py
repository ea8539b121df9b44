"""The client's wires to a control plane, and one question over each.

Where the control plane is (the address given, ``$FASTWORKER_ADDRESS``, or
found by its discovery beacon), the secret that signs the frames, the TLS
settings for a ``tls+tcp://`` address (given, or ``$FASTWORKER_TLS_*``;
``actors.tls.resolve_tls`` decides whether they apply), and one request
wire per port: base+0..3 take submissions by priority, base+4
queries. A question that goes unanswered, or is answered badly, raises
``ConnectionLost`` naming the port. What the messages mean is not known
here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, final

import anyio

from actors.edge import offset_address
from actors.errors import ConfigError, FrameError, NotConnected, Unanswered
from actors.frame import Framer, secret_from
from actors.nng import RequestWire, open_request_wire
from actors.requester import Requester
from actors.secret import AUTO, dialer_secret
from actors.tls import TlsOptions, resolve_tls, tls_from_environ
from fastworker.errors import AnswerTooLarge, ConnectionLost, InvalidSubmission, NoControlPlane
from fastworker.messages import CODEC, PRIORITIES
from fastworker.probe import discover

__all__ = ["Connection", "Port"]

#: Where the control plane listens unless told otherwise.
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"


@final
class Port:
    """One port of the control plane: messages out in one frame, their
    answers back, or ``ConnectionLost``."""

    __slots__ = ("_address", "_connect_hint", "_hint", "_requester")

    def __init__(self, wire: RequestWire, framer: Framer, *, tls: bool = False,
                 address: str = "") -> None:
        self._requester = Requester(wire, framer)
        self._address = address
        self._hint = (
            "is it running there, with a certificate signed by FASTWORKER_TLS_CA, and "
            "does it accept this client's certificate, FASTWORKER_TLS_CERT?" if tls
            else "is it running there, with the same FASTWORKER_SECRET?"
        )
        self._connect_hint = (
            "is it running there, and does it accept this client's certificate, "
            "FASTWORKER_TLS_CERT, signed by its CA?" if tls else "is it running there?")

    @property
    def name(self) -> str:
        """The wire's name, for messages: ``dialing tcp://127.0.0.1:5559``."""
        return self._requester.name

    async def ask(self, messages: Sequence[Any], timeout: float) -> list[Any]:
        """Send ``messages`` in one frame; return their answers, in order.

        Raises:
            AnswerTooLarge: the control plane could not send the answer in
                one frame (a ``ConnectionLost``; nothing was lost there).
            NoControlPlane: (a ``ConnectionLost``) this port has never been
                connected, and nothing accepted a connection within the
                connect timeout; nothing was sent.
            ConnectionLost: no answer within ``timeout`` seconds, or a bad one.
        """
        try:
            return await self._requester.ask(messages, timeout=timeout)
        except NotConnected as error:
            raise NoControlPlane(
                f"no control plane at {self._address or self.name}: {error} ({self._connect_hint} "
                f"The address is Client(address=...) or FASTWORKER_ADDRESS, default "
                f"{DEFAULT_ADDRESS}; connect_timeout sets how long to wait for it)"
            ) from None
        except TimeoutError:
            raise ConnectionLost(
                f"no answer from the control plane at {self.name} within {timeout:g} s "
                f"({self._hint})"
            ) from None
        except Unanswered as error:
            raise AnswerTooLarge(str(error)) from None
        except FrameError as error:
            raise ConnectionLost(f"bad answer from {self.name}: {error}") from None

    async def aclose(self) -> None:
        """Close the wire."""
        await self._requester.wire.aclose()


@final
class Connection:
    """Where the control plane is and how frames are signed; ``open`` dials
    its ports.

    Args:
        address: the base address; default ``$FASTWORKER_ADDRESS``, else
            found by discovery if ``discover`` is given, else
            ``tcp://127.0.0.1:5555``.
        secret: default ``$FASTWORKER_SECRET``, or the contents of the file
            ``$FASTWORKER_SECRET_FILE``, or with neither set this user's
            per-host secret (``actors.secret``; none when a client
            certificate does mutual TLS); ``""``: unsigned frames.
        discover: seconds to wait for a discovery beacon's answer.
        tls: TLS settings for a ``tls+tcp://`` control plane; default
            ``$FASTWORKER_TLS_CA``, ``_CERT``, ``_KEY``, ``_SERVER_NAME``.

    Raises:
        InvalidSubmission: the secret the environment names cannot be read
            (the message names the file and the fix); with discovery, from
            ``open``, once the control plane is found.
    """

    def __init__(
        self,
        address: str | None,
        secret: str | bytes | None,
        *,
        discover: float | None,
        max_frame_bytes: int,
        contexts: int,
        tls: TlsOptions | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        given = address or os.environ.get("FASTWORKER_ADDRESS")
        self.address = given or DEFAULT_ADDRESS
        self._discover = None if given else discover
        self._tls = tls if tls is not None else tls_from_environ()
        self._secret = secret
        self._max_frame_bytes = max_frame_bytes
        # Known address: a bad secret setting raises now; else once found.
        self._framer = None if self._discover is not None else self._framer_for(self.address)
        self._contexts = contexts
        self._connect_timeout = connect_timeout
        self._ports: list[Port] = []

    def _framer_for(self, address: str) -> Framer:
        """The framer for the control plane at ``address``: the secret given,
        else the environment's by the nodes' rule (``$FASTWORKER_SECRET``,
        else ``$FASTWORKER_SECRET_FILE``: a path or ``none``, else this
        user's per-host secret, made if missing for a control plane on this
        host, only read for another host's: ``actors.secret.dialer_secret``).

        Raises:
            InvalidSubmission: the secret cannot be used; the message names
                the file and the fix.
        """
        if self._secret is not None:
            secret = secret_from(self._secret)
        else:
            try:
                secret = dialer_secret(os.environ.get("FASTWORKER_SECRET", ""),
                                       os.environ.get("FASTWORKER_SECRET_FILE", AUTO),
                                       address=address, tls=self._tls)
            except ConfigError as error:
                raise InvalidSubmission(str(error)) from None
        return Framer(CODEC, secret=secret, max_frame_bytes=self._max_frame_bytes)

    async def open(self) -> list[Port]:
        """Find the control plane if asked to, and dial its ports: the four
        submission ports by priority level, then the queries port.

        Raises:
            InvalidSubmission: the TLS settings do not fit the address (a
                ``tls+tcp://`` one without them, a plain one with them, a
                file missing, a key without its certificate); a control
                plane found by discovery on another host, with no secret
                set here for it.
        """
        if self._discover is not None:
            self.address, _ = await discover(timeout=self._discover)
            self._framer = self._framer_for(self.address)
        assert self._framer is not None
        try:
            tls = resolve_tls(self.address, self._tls, "dial")
        except ConfigError as error:
            raise InvalidSubmission(f"TLS to the control plane: {error}") from None
        try:
            for offset in range(len(PRIORITIES) + 1):
                wire = await open_request_wire(
                    offset_address(self.address, offset),
                    recv_max_size=self._max_frame_bytes,
                    contexts=self._contexts,
                    tls=tls,
                    connect_timeout=self._connect_timeout,
                )
                self._ports.append(Port(wire, self._framer, tls=tls is not None,
                                        address=self.address))
        except BaseException:
            await self.aclose()
            raise
        return self._ports

    async def aclose(self) -> None:
        """Close every wire (shielded: it runs while the client is cancelled)."""
        with anyio.CancelScope(shield=True):
            for port in self._ports:
                await port.aclose()
        self._ports = []
