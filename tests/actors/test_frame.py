"""actors.frame: header, size limit, HMAC auth and batch splitting, without IO."""

from __future__ import annotations

import contextlib
import hmac
import struct

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.codec import Codec
from actors.errors import FrameError, StaleFrame
from actors.frame import DEFAULT_MAX_FRAME_BYTES, FRAME_VERSION, Framer, secret_from


@attrs.frozen(kw_only=True)
class Ping:
    n: int
    payload: bytes = b""


@attrs.frozen(kw_only=True)
class Pong:
    n: int
    note: str | None = None


CODEC = Codec([Ping, Pong], protocol=1)
SECRET = b"s3cret"
PLAIN = Framer(CODEC)
SIGNED = Framer(CODEC, secret=SECRET)

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
messages = st.builds(Ping, n=ints, payload=st.binary()) | st.builds(
    Pong, n=ints, note=st.none() | st.text()
)
batches = st.lists(messages, max_size=20)


def header(*, version: int = FRAME_VERSION, flags: int = 0, protocol: int = 1) -> bytes:
    """A frame header with the given fields, for hand-made frames."""
    return b"FW" + struct.pack(">BBH", version, flags, protocol)


def signed(body: bytes, *, secret: bytes = SECRET, **fields: int) -> bytes:
    """A hand-made signed frame around ``body``."""
    head = header(flags=1, **fields)
    return head + hmac.digest(secret, head + body, "sha256") + body


def unpack_error(framer: Framer, frame: bytes) -> str:
    """The reason ``framer`` gives for refusing ``frame``."""
    with pytest.raises(FrameError) as caught:
        framer.unpack(frame)
    return str(caught.value)


BODY = CODEC.encode([Ping(n=1)])


class TestRoundTrip:
    @given(batches)
    def test_an_unsigned_frame_unpacks_to_its_batch(self, batch: list[object]) -> None:
        """Without a secret, pack then unpack gives the batch back."""
        assert PLAIN.unpack(PLAIN.pack(batch)) == batch

    @given(batches)
    def test_a_signed_frame_unpacks_to_its_batch(self, batch: list[object]) -> None:
        """With the same secret on both ends, pack then unpack gives the batch back."""
        assert SIGNED.unpack(SIGNED.pack(batch)) == batch

    def test_the_unsigned_layout_is_header_then_body(self) -> None:
        """An unsigned frame is magic, version, flags 0, protocol u16, then the body."""
        assert PLAIN.pack([Ping(n=1)]) == b"FW\x02\x00\x00\x01" + BODY

    def test_the_signed_layout_carries_an_hmac_of_header_and_body(self) -> None:
        """A signed frame sets flag bit 0 and puts HMAC-SHA256(secret, header + body) first."""
        head = b"FW\x02\x01\x00\x01"
        tag = hmac.digest(SECRET, head + BODY, "sha256")
        assert SIGNED.pack([Ping(n=1)]) == head + tag + BODY

    def test_a_wide_protocol_number_travels_big_endian(self) -> None:
        """The protocol is a big-endian u16 in the header."""
        framer = Framer(Codec([Ping], protocol=0x0102))
        frame = framer.pack([Ping(n=1)])
        assert frame[4:6] == b"\x01\x02"
        assert framer.unpack(frame) == [Ping(n=1)]

    def test_the_framer_reports_its_settings(self) -> None:
        """signed, codec and max_frame_bytes describe the framer."""
        assert (PLAIN.signed, SIGNED.signed) == (False, True)
        assert PLAIN.codec is CODEC
        assert PLAIN.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 16 * 1024 * 1024
        assert SECRET not in repr(SIGNED).encode()


class TestUnpackRefuses:
    def test_an_oversized_frame_is_refused_before_anything_else(self) -> None:
        """The size limit is checked first, even before the magic."""
        framer = Framer(CODEC, max_frame_bytes=100)
        assert unpack_error(framer, b"GET / HTTP/1.1\r\n" * 10) == (
            "frame of 160 bytes exceeds the limit of 100"
        )

    def test_a_frame_at_the_limit_is_accepted(self) -> None:
        """A frame exactly max_frame_bytes long is fine."""
        frame = PLAIN.pack([Ping(n=1)])
        assert Framer(CODEC, max_frame_bytes=len(frame)).unpack(frame) == [Ping(n=1)]

    @pytest.mark.parametrize(
        ("frame", "reason"),
        [
            pytest.param(b"", "truncated header (0 bytes)", id="empty"),
            pytest.param(b"FW\x01\x00\x00", "truncated header (5 bytes)", id="short_header"),
            pytest.param(
                b"GET / HTTP/1.1\r\n", "not a frame (magic b'GE')", id="http_request"
            ),
            pytest.param(
                header(version=7) + BODY, "unknown frame version 7 (expected 2)", id="version"
            ),
            pytest.param(
                header(version=1) + BODY,
                "unknown frame version 1 (expected 2)",
                id="version_1_before_stamps",
            ),
            pytest.param(
                header(protocol=3) + BODY, "protocol version 3 (expected 1)", id="protocol"
            ),
            pytest.param(
                header(version=3, protocol=3) + BODY,
                "unknown frame version 3 (expected 2)",
                id="version_before_protocol",
            ),
            pytest.param(header(flags=0x82) + BODY, "unknown frame flags 0x82", id="flags"),
            pytest.param(
                signed(BODY),
                "signed frame, but no shared secret is configured here",
                id="signed_when_not_configured",
            ),
            pytest.param(
                header() + b"\xc1", "malformed msgpack: invalid opcode '\\xc1' (byte 0)", id="body"
            ),
        ],
    )
    def test_without_a_secret(self, frame: bytes, reason: str) -> None:
        """A framer without a secret refuses each bad frame with its exact reason."""
        assert unpack_error(PLAIN, frame) == reason

    @pytest.mark.parametrize(
        ("frame", "reason"),
        [
            pytest.param(
                header() + BODY,
                "unsigned frame (this end requires a shared secret)",
                id="unsigned_when_required",
            ),
            pytest.param(signed(BODY, secret=b"wrong"), "bad auth tag", id="wrong_secret"),
            pytest.param(signed(BODY)[:-1] + b"\x01", "bad auth tag", id="tampered_body"),
            pytest.param(signed(BODY) + b"\x00", "bad auth tag", id="appended_byte"),
            pytest.param(header(flags=1) + b"\x00" * 10, "bad auth tag", id="truncated_tag"),
            pytest.param(header(flags=1), "bad auth tag", id="header_only"),
            pytest.param(
                signed(BODY, protocol=3),
                "protocol version 3 (expected 1)",
                id="protocol_before_auth",
            ),
            pytest.param(
                signed(b"\x07"),
                "body is not an array of messages (got int)",
                id="signed_garbage_body",
            ),
        ],
    )
    def test_with_a_secret(self, frame: bytes, reason: str) -> None:
        """A framer with a secret refuses each bad or forged frame with its exact reason."""
        assert unpack_error(SIGNED, frame) == reason

    def test_a_tampered_header_fails_authentication(self) -> None:
        """The tag covers the header: a frame whose header changed after signing is refused."""
        frame = bytearray(signed(BODY, protocol=1))
        other = Framer(Codec([Ping, Pong], protocol=2), secret=SECRET)
        frame[4:6] = b"\x00\x02"
        assert unpack_error(other, bytes(frame)) == "bad auth tag"

    def test_every_byte_of_the_tag_is_checked(self) -> None:
        """A tag wrong in any one of its 32 bytes, the last included, is refused."""
        start = len(header())
        reasons = {}
        for position in range(32):
            frame = bytearray(signed(BODY))
            frame[start + position] ^= 0x01
            try:
                SIGNED.unpack(bytes(frame))
            except FrameError as error:
                reasons[position] = str(error)
            else:
                reasons[position] = "accepted"
        assert reasons == dict.fromkeys(range(32), "bad auth tag")

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_raise_only_frame_error(self, frame: bytes) -> None:
        """Whatever bytes arrive, unpack returns messages or raises FrameError, signed or not."""
        for framer in (PLAIN, SIGNED):
            with contextlib.suppress(FrameError):
                framer.unpack(frame)

    @given(st.binary(max_size=200))
    def test_arbitrary_bodies_behind_a_valid_header_raise_only_frame_error(
        self, body: bytes
    ) -> None:
        """A valid header (and tag) before any body still gives only FrameError."""
        for framer, frame in ((PLAIN, header() + body), (SIGNED, signed(body))):
            with contextlib.suppress(FrameError):
                framer.unpack(frame)


class TestStamps:
    @given(batches, st.tuples(*[st.integers(0, 2**64 - 1)] * 3))
    def test_a_stamped_frame_unpacks_to_its_stamp_and_batch(
        self, batch: list[object], stamp: tuple[int, int, int]
    ) -> None:
        """A stamp travels whole beside the batch, signed or not."""
        for framer in (PLAIN, SIGNED):
            assert framer.unpack_stamped(framer.pack(batch, stamp=stamp)) == (stamp, batch)
            assert framer.unpack(framer.pack(batch, stamp=stamp)) == batch

    def test_the_stamp_follows_the_tag_and_is_signed(self) -> None:
        """A stamped frame sets flag bit 1; the 24-byte stamp comes after the tag
        and the tag covers it."""
        head = b"FW\x02\x03\x00\x01"
        stamp = struct.pack(">QQQ", 5, 6, 7)
        tag = hmac.digest(SECRET, head + stamp + BODY, "sha256")
        frame = SIGNED.pack([Ping(n=1)], stamp=(5, 6, 7))
        assert frame == head + tag + stamp + BODY
        assert PLAIN.unpack_stamped(PLAIN.pack([Ping(n=1)])) == (None, [Ping(n=1)])
        changed = bytearray(frame)
        changed[38 + 23] ^= 0x01  # the sequence's last byte
        assert unpack_error(SIGNED, bytes(changed)) == "bad auth tag"

    def test_a_refusal_raises_stale_frame_with_its_stamp(self) -> None:
        """A refusal frame has flags 0b111 and no body; unpacking it raises
        StaleFrame naming the epoch, the sender and the sequence."""
        refusal = SIGNED.refusal((0xE, 0x5, 9))
        assert refusal[3] == 0x07 and len(refusal) == 6 + 32 + 24
        with pytest.raises(StaleFrame) as caught:
            SIGNED.unpack(refusal)
        assert (caught.value.epoch, caught.value.sender, caught.value.seq) == (0xE, 0x5, 9)
        assert str(caught.value) == "request 5:9 refused as stale (server epoch e)"

    @pytest.mark.parametrize(
        ("frame", "reason"),
        [
            pytest.param(header(flags=0x02) + b"\x00" * 5, "truncated stamp (5 bytes)", id="stamp"),
            pytest.param(header(flags=0x04), "refusal frame without a stamp", id="refusal"),
        ],
    )
    def test_a_bad_stamp_is_refused(self, frame: bytes, reason: str) -> None:
        """A stamp too short, or a refusal without one, is a frame error."""
        assert unpack_error(PLAIN, frame) == reason


class TestPack:
    def test_a_frame_over_the_limit_is_refused(self) -> None:
        """pack refuses to build a frame larger than max_frame_bytes."""
        framer = Framer(CODEC, max_frame_bytes=64)
        with pytest.raises(FrameError) as caught:
            framer.pack([Ping(n=1, payload=b"x" * 100)])
        size = len(PLAIN.pack([Ping(n=1, payload=b"x" * 100)]))
        assert str(caught.value) == f"frame of {size} bytes exceeds the limit of 64"

    def test_an_unregistered_message_is_a_type_error(self) -> None:
        """Packing a class the codec does not know is a bug on this side, not a FrameError."""
        with pytest.raises(TypeError, match="is not a registered message"):
            PLAIN.pack([object()])


class TestPackBatches:
    def test_a_batch_that_fits_makes_one_frame(self) -> None:
        """A batch under the limit makes exactly the frame pack would."""
        batch = [Ping(n=i) for i in range(100)]
        assert SIGNED.pack_batches(batch) == [SIGNED.pack(batch)]

    def test_no_messages_make_no_frames(self) -> None:
        """An empty batch makes no frames."""
        assert PLAIN.pack_batches([]) == []

    def test_a_batch_too_big_is_halved_until_each_part_fits(self) -> None:
        """Eight messages where four fit go out as two frames of four, in order."""
        batch = [Ping(n=i, payload=b"x" * 100) for i in range(8)]
        framer = Framer(CODEC, secret=SECRET, max_frame_bytes=len(SIGNED.pack(batch[:4])))
        frames = framer.pack_batches(batch)
        assert len(frames) == 2
        assert [m for frame in frames for m in framer.unpack(frame)] == batch

    @given(batches, st.integers(min_value=300, max_value=2000))
    def test_every_frame_fits_and_order_is_kept(self, batch: list[object], limit: int) -> None:
        """Whatever the batch and limit, frames fit the limit and unpack to the batch in order."""
        framer = Framer(CODEC, secret=SECRET, max_frame_bytes=limit)
        try:
            frames = framer.pack_batches(batch)
        except FrameError:
            assert any(len(SIGNED.pack([m])) > limit for m in batch)
            return
        assert all(len(frame) <= limit for frame in frames)
        assert [m for frame in frames for m in framer.unpack(frame)] == batch

    def test_one_message_over_the_limit_is_named(self) -> None:
        """A message that alone exceeds the limit raises FrameError naming its class and size."""
        framer = Framer(CODEC, max_frame_bytes=200)
        big = Ping(n=0, payload=b"x" * 300)
        size = len(PLAIN.pack([big]))
        with pytest.raises(FrameError) as caught:
            framer.pack_batches([Pong(n=1), big, Pong(n=2)])
        assert str(caught.value) == (
            f"message Ping alone makes a frame of {size} bytes, over the limit of 200"
        )


class TestSettings:
    @pytest.mark.parametrize(
        ("value", "secret"),
        [
            pytest.param(None, None, id="none"),
            pytest.param("", None, id="empty_str"),
            pytest.param(b"", None, id="empty_bytes"),
            pytest.param("pässword", "pässword".encode(), id="str_is_utf8"),
            pytest.param(b"\x00raw", b"\x00raw", id="bytes"),
        ],
    )
    def test_secret_from_normalises_configured_secrets(
        self, value: str | bytes | None, secret: bytes | None
    ) -> None:
        """Text becomes UTF-8 bytes, and empty means no secret."""
        assert secret_from(value) == secret

    def test_an_empty_secret_is_refused(self) -> None:
        """Framer refuses b"" as a secret rather than signing with it."""
        with pytest.raises(ValueError, match="an empty secret is no secret"):
            Framer(CODEC, secret=b"")

    def test_a_protocol_outside_u16_is_refused(self) -> None:
        """The codec's protocol must fit the header's u16."""
        with pytest.raises(ValueError) as caught:
            Framer(Codec([Ping], protocol=70000))
        assert str(caught.value) == "protocol 70000 does not fit a frame header (0-65535)"

    def test_a_limit_with_no_room_for_a_body_is_refused(self) -> None:
        """max_frame_bytes must leave room past the header and tag."""
        with pytest.raises(ValueError) as caught:
            Framer(CODEC, secret=SECRET, max_frame_bytes=38)
        assert str(caught.value) == "max_frame_bytes must be more than 38"
