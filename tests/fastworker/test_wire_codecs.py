"""fastworker's codecs (the wire's and the journal's): every message class
encodes to the maps cattrs unstructures it into, by msgspec directly."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import Codec
from actors.codec import make_converter
from fastworker.journal.schema import CODEC as JOURNAL_CODEC
from fastworker.messages import CODEC

CLASSES = sorted({**CODEC.tags, **JOURNAL_CODEC.tags}.items())
#: Keys in a canonical order, so that two maps compare as bytes (NaN included).
CANONICAL = msgspec.msgpack.Encoder(order="sorted")
CONVERTER = make_converter()


def codec_of(tag: str) -> Codec:
    return CODEC if tag in CODEC.tags else JOURNAL_CODEC


@pytest.mark.parametrize(("tag", "cls"), CLASSES, ids=[tag for tag, _ in CLASSES])
def test_the_class_skips_cattrs_when_encoding(tag: str, cls: type) -> None:
    """Every message is plain (scalars, tuples, nested plain classes), so
    encoding it costs one msgspec call; a field that is not (an enum, a
    private name) would send the class back through cattrs, three times slower."""
    assert codec_of(tag)._encoders[cls][1] is None


@pytest.mark.parametrize(("tag", "cls"), CLASSES, ids=[tag for tag, _ in CLASSES])
def test_the_body_holds_what_cattrs_unstructures(tag: str, cls: type) -> None:
    codec = codec_of(tag)

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.builds(cls))
    def check(message: object) -> None:
        expected = [[tag, CONVERTER.unstructure(message)]]
        try:
            body = codec.encode([message])
        except OverflowError:  # an int msgpack cannot hold: refused either way
            with pytest.raises(OverflowError):
                msgspec.msgpack.encode(expected)
            return
        assert CANONICAL.encode(msgspec.msgpack.decode(body)) == CANONICAL.encode(expected)

    check()
