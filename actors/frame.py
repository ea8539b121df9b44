"""Frames: a codec body behind a small header, signed when a secret is set.

Edge actors sit between a ``Wire`` (which moves whole frames as bytes) and
their actors (which see messages). Outbound, ``Framer.pack_batches`` turns a
drained batch into as few frames as fit the size limit; inbound,
``Framer.unpack`` checks a frame from the network and decodes it. This module
does no IO: a ``FrameError`` from ``unpack`` is the reason the edge logs
when it drops the frame ("dropped frame from tcp://127.0.0.1:53211: bad auth
tag").

Layout, all integers big-endian::

    magic  b"FW"      2 bytes
    version           u8   FRAME_VERSION
    flags             u8   bit 0: signed; bit 1: stamped; bit 2: refusal
    protocol          u16  the codec's message protocol
    auth tag          32 bytes, only when signed:
                      HMAC-SHA256(secret, header + stamp + body)
    stamp             24 bytes, only when stamped: the receiver's epoch,
                      the sender's id and its sequence, each u64
    body              the codec's msgpack batch

``unpack`` checks in that order, cheapest first, and only decodes a body
once the frame is authenticated. A stamp makes a request frame unique, for
the receiver's replay window (``actors.freshness``); this module carries it
and judges nothing by it. A refusal is the stamped, bodiless answer to a
request refused as stale: its stamp names the receiver's current epoch and
echoes the request's sender and sequence.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Final, final

from actors.codec import Codec
from actors.errors import FrameError, StaleFrame
from actors.secret import read_secret_file

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES", "FRAME_VERSION", "Framer", "Stamp", "load_secret", "secret_from",
]

#: The layout version written in, and required of, every frame header.
FRAME_VERSION: Final = 2
#: Frames larger than this are neither sent nor accepted, unless configured.
DEFAULT_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024

_MAGIC: Final = b"FW"
_HEADER: Final = struct.Struct(">2sBBH")
_FLAG_SIGNED: Final = 0x01
_FLAG_STAMPED: Final = 0x02
_FLAG_REFUSAL: Final = 0x04
_KNOWN_FLAGS: Final = _FLAG_SIGNED | _FLAG_STAMPED | _FLAG_REFUSAL
_STAMP: Final = struct.Struct(">QQQ")
_TAG_BYTES: Final = 32
_DIGEST: Final = "sha256"

#: A request frame's stamp: (receiver epoch, sender id, sender sequence).
Stamp = tuple[int, int, int]


def secret_from(value: str | bytes | None) -> bytes | None:
    """Turn a configured shared secret into the bytes a ``Framer`` takes.

    Args:
        value: The secret as configured: text (encoded as UTF-8), bytes, or
            ``None``. Empty means "no secret", as an unset environment
            variable often arrives as ``""``.

    Returns:
        The secret's bytes, or ``None`` for no secret.
    """
    if not value:
        return None
    return value.encode() if isinstance(value, str) else value


def load_secret(secret: str, secret_file: str) -> bytes | None:
    """The configured secret's bytes: ``secret``, or the stripped text of
    ``secret_file``; ``None`` if neither is set. Which secret signs a
    node's frames (the per-host default included) is decided by
    ``actors.secret.frame_secret``; this reads a plain setting only.

    Raises:
        ConfigError: the file cannot be read, or is empty.
    """
    if not secret_file:
        return secret_from(secret)
    return read_secret_file(Path(secret_file), auto=False)


@final
class Framer:
    """Packs batches of messages into frames and checks frames back into messages.

    Both ends of a link need the same codec protocol and the same secret.
    With a secret, every frame is signed and an unsigned or badly signed one
    is refused; without one, signed frames are refused too, so a
    misconfiguration shows up as dropped frames with a clear reason rather
    than as half the links working.

    Args:
        codec: Encodes and decodes the bodies; its ``protocol`` goes in the
            header.
        secret: The shared secret for HMAC-SHA256 tags, or ``None`` to send
            and accept only unsigned frames. See ``secret_from``.
        max_frame_bytes: The largest frame, header included, that this end
            sends or accepts.

    Raises:
        ValueError: The protocol does not fit the header, the secret is empty,
            or the limit leaves no room for a body.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        secret: bytes | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if not 0 <= codec.protocol <= 0xFFFF:
            raise ValueError(f"protocol {codec.protocol} does not fit a frame header (0-65535)")
        if secret is not None and not secret:
            raise ValueError("an empty secret is no secret; pass None to send unsigned frames")
        signed = 0 if secret is None else _FLAG_SIGNED
        self._header = _HEADER.pack(_MAGIC, FRAME_VERSION, signed, codec.protocol)
        self._stamped_header = _HEADER.pack(
            _MAGIC, FRAME_VERSION, signed | _FLAG_STAMPED, codec.protocol)
        self._refusal_header = _HEADER.pack(
            _MAGIC, FRAME_VERSION, signed | _FLAG_STAMPED | _FLAG_REFUSAL, codec.protocol)
        self._overhead = len(self._header) + (0 if secret is None else _TAG_BYTES)
        if max_frame_bytes <= self._overhead:
            raise ValueError(f"max_frame_bytes must be more than {self._overhead}")
        self.codec: Final = codec
        self.max_frame_bytes: Final = max_frame_bytes
        self.secret: Final = secret

    @property
    def signed(self) -> bool:
        """Whether this end signs its frames and requires signed ones."""
        return self.secret is not None

    def __repr__(self) -> str:
        return (
            f"<Framer protocol={self.codec.protocol} signed={self.signed} "
            f"max_frame_bytes={self.max_frame_bytes}>"
        )

    def pack(self, messages: Sequence[object], *, stamp: Stamp | None = None) -> bytes:
        """Pack a batch of messages into one frame, stamped if ``stamp`` is given
        (a request to a serving edge: see ``actors.freshness``).

        Raises:
            FrameError: The frame would exceed ``max_frame_bytes``; use
                ``pack_batches`` to split.
            TypeError: A message's class is not registered with the codec.
        """
        body = self.codec.encode(messages)
        if stamp is not None:
            size = self._overhead + _STAMP.size + len(body)
            if size > self.max_frame_bytes:
                raise FrameError(self._too_large(size))
            return self._seal(_STAMP.pack(*stamp) + body, self._stamped_header)
        size = self._overhead + len(body)
        if size > self.max_frame_bytes:
            raise FrameError(self._too_large(size))
        return self._seal(body, self._header)

    def refusal(self, stamp: Stamp) -> bytes:
        """The answer to a request refused as stale: no body, and ``stamp``
        (the receiver's current epoch, the request's sender and sequence).
        ``unpack`` on the requesting end raises ``StaleFrame`` for it."""
        return self._seal(_STAMP.pack(*stamp), self._refusal_header)

    def pack_batches(self, messages: Sequence[object]) -> list[bytes]:
        """Pack a batch of messages into frames that each fit ``max_frame_bytes``.

        A batch that fits makes one frame, the common case, at the cost of one
        encode. One that does not is halved, recursively, keeping the order
        of messages across the frames. No messages make no frames.

        Raises:
            FrameError: One message alone makes a frame over the limit; the
                reason names its class and that frame's size.
            TypeError: A message's class is not registered with the codec.
        """
        frames: list[bytes] = []
        if messages:
            self._pack_into(frames, messages)
        return frames

    def unpack(self, frame: bytes) -> list[object]:
        """Check a frame from the network and decode its messages (a stamp,
        if any, is checked with the rest and then ignored).

        Checks run cheapest first: size, header, version, protocol, auth tag;
        the body is decoded only after all of them pass.

        Raises:
            StaleFrame: The frame is a refusal: the receiver refused the
                request as stale; it names the receiver's current epoch.
            FrameError: The frame is refused; the reason says why in a few
                words ("bad auth tag", "protocol version 3 (expected 1)").
        """
        return self.unpack_stamped(frame)[1]

    def unpack_stamped(self, frame: bytes) -> tuple[Stamp | None, list[object]]:
        """``unpack``, and the frame's stamp (``None`` if it has none).

        Raises:
            StaleFrame, FrameError: as ``unpack``.
        """
        size = len(frame)
        if size > self.max_frame_bytes:
            raise FrameError(self._too_large(size))
        if size < _HEADER.size:
            raise FrameError(f"truncated header ({size} bytes)")
        magic, version, flags, protocol = _HEADER.unpack_from(frame)
        if magic != _MAGIC:
            raise FrameError(f"not a frame (magic {magic!r})")
        if version != FRAME_VERSION:
            raise FrameError(f"unknown frame version {version} (expected {FRAME_VERSION})")
        if protocol != self.codec.protocol:
            raise FrameError(f"protocol version {protocol} (expected {self.codec.protocol})")
        if flags & ~_KNOWN_FLAGS:
            raise FrameError(f"unknown frame flags 0x{flags:02x}")
        if self.secret is None:
            if flags & _FLAG_SIGNED:
                raise FrameError("signed frame, but no shared secret is configured here")
            rest = frame[_HEADER.size :]
        else:
            if not flags & _FLAG_SIGNED:
                raise FrameError("unsigned frame (this end requires a shared secret)")
            # A frame too short to hold a tag fails the comparison like a wrong tag.
            rest = frame[self._overhead :]
            expected = hmac.digest(self.secret, frame[: _HEADER.size] + rest, _DIGEST)
            if not hmac.compare_digest(expected, frame[_HEADER.size : self._overhead]):
                raise FrameError("bad auth tag")
        if not flags & _FLAG_STAMPED:
            if flags & _FLAG_REFUSAL:
                raise FrameError("refusal frame without a stamp")
            return None, self.codec.decode(rest)
        if len(rest) < _STAMP.size:
            raise FrameError(f"truncated stamp ({len(rest)} bytes)")
        stamp: Stamp = _STAMP.unpack_from(rest)
        if flags & _FLAG_REFUSAL:
            raise StaleFrame(*stamp)
        return stamp, self.codec.decode(rest[_STAMP.size :])

    def _pack_into(self, frames: list[bytes], messages: Sequence[object]) -> None:
        body = self.codec.encode(messages)
        size = self._overhead + len(body)
        if size <= self.max_frame_bytes:
            frames.append(self._seal(body, self._header))
            return
        if len(messages) == 1:
            raise FrameError(
                f"message {type(messages[0]).__name__} alone makes a frame of {size} bytes, "
                f"over the limit of {self.max_frame_bytes}"
            )
        half = len(messages) // 2
        self._pack_into(frames, messages[:half])
        self._pack_into(frames, messages[half:])

    def _seal(self, body: bytes, header: bytes) -> bytes:
        """Put ``header``, and the auth tag when signing, before ``body``
        (which starts with the stamp, in a stamped frame)."""
        if self.secret is None:
            return header + body
        tag = hmac.digest(self.secret, header + body, _DIGEST)
        return b"".join((header, tag, body))

    def _too_large(self, size: int) -> str:
        return f"frame of {size} bytes exceeds the limit of {self.max_frame_bytes}"
