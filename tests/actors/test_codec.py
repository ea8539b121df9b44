"""actors.codec: batches of attrs messages to msgpack bodies and back, strictly."""

from __future__ import annotations

import contextlib
import enum
from typing import Any

import attrs
import cattrs
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.codec import Codec, make_converter
from actors.errors import FrameError


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen(kw_only=True)
class Ping:
    n: int
    payload: bytes = b""


@attrs.frozen(kw_only=True)
class Inner:
    label: str
    weight: float


@attrs.frozen(kw_only=True)
class Job:
    id: int
    name: str
    payload: bytes
    score: float
    parent: int | None
    labels: tuple[str, ...]
    pair: tuple[int, str]
    inner: Inner
    inners: tuple[Inner, ...]
    maybe_inner: Inner | None
    color: Color
    level: Level
    flags: frozenset[str]
    urgent: bool
    options: dict[str, int]


@attrs.frozen(kw_only=True)
class Checked:
    n: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen(kw_only=True)
class Node:
    name: str
    children: tuple[Node, ...] = ()


class _Elsewhere:
    @attrs.frozen(kw_only=True)
    class Ping:
        other: int


CODEC = Codec([Ping, Inner, Job, Checked], protocol=1)

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False)
inners = st.builds(Inner, label=st.text(), weight=floats)
jobs = st.builds(
    Job,
    id=ints,
    name=st.text(),
    payload=st.binary(),
    score=floats,
    parent=st.none() | ints,
    labels=st.lists(st.text(), max_size=5).map(tuple),
    pair=st.tuples(ints, st.text()),
    inner=inners,
    inners=st.lists(inners, max_size=3).map(tuple),
    maybe_inner=st.none() | inners,
    color=st.sampled_from(Color),
    level=st.sampled_from(Level),
    flags=st.frozensets(st.text(), max_size=4),
    urgent=st.booleans(),
    options=st.dictionaries(st.text(), ints, max_size=4),
)
pings = st.builds(Ping, n=ints, payload=st.binary())
messages = st.one_of(jobs, pings, inners)

# Anything msgpack carries, to throw at the structuring code.
wire_values = st.recursive(
    st.none() | st.booleans() | ints | floats | st.text() | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text() | ints, children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [a.name for cls in (Ping, Inner, Job, Checked) for a in attrs.fields(cls)] + ["extra"]
)
wire_entries = st.tuples(
    st.sampled_from(["Ping", "Inner", "Job", "Checked", "Nope"]),
    st.dictionaries(field_names, wire_values, max_size=16) | wire_values,
)


def body_of(*entries: Any) -> bytes:
    """Encode raw ``[tag, data]`` entries the way a (possibly hostile) peer might."""
    return msgspec.msgpack.encode(list(entries))


class TestRoundTrip:
    @given(st.lists(messages, max_size=20))
    def test_a_batch_decodes_to_equal_messages_in_order(self, batch: list[object]) -> None:
        """Any batch of registered messages decodes to an equal batch, in order."""
        assert CODEC.decode(CODEC.encode(batch)) == batch

    @given(jobs)
    def test_field_types_survive_the_trip(self, job: Job) -> None:
        """Tuples, frozensets, enums and nested classes come back as their own types."""
        (decoded,) = CODEC.decode(CODEC.encode([job]))
        assert isinstance(decoded, Job)
        assert type(decoded.labels) is tuple
        assert type(decoded.flags) is frozenset
        assert type(decoded.color) is Color
        assert type(decoded.level) is Level
        assert type(decoded.inner) is Inner

    def test_the_body_is_an_array_of_tag_and_data_pairs(self) -> None:
        """The body is a msgpack array of [tag, field map] pairs, enums by value."""
        body = CODEC.encode([Ping(n=1, payload=b"x"), Inner(label="a", weight=0.5)])
        assert msgspec.msgpack.decode(body) == [
            ["Ping", {"n": 1, "payload": b"x"}],
            ["Inner", {"label": "a", "weight": 0.5}],
        ]

    def test_an_empty_batch_round_trips(self) -> None:
        """An empty batch encodes to an empty array and decodes to an empty list."""
        assert CODEC.decode(CODEC.encode([])) == []

    def test_a_float_field_accepts_an_int_from_the_wire(self) -> None:
        """An int for a float field becomes a float: other msgpack encoders send 1.0 as 1."""
        (inner,) = CODEC.decode(body_of(["Inner", {"label": "a", "weight": 3}]))
        assert inner == Inner(label="a", weight=3.0)
        assert type(inner.weight) is float



@attrs.frozen(kw_only=True)
class Hidden:
    """Fields msgspec would encode otherwise than cattrs unstructures them."""

    _secret: int
    shown: int = 1
    derived: int = attrs.field(default=2, init=False)


@attrs.frozen(kw_only=True)
class HoldsHidden:
    hidden: Hidden
    note: str = ""


class TestEncodingAsCattrs:
    """A body holds what the converter unstructures, whichever path encodes it."""

    @given(st.lists(messages, max_size=10))
    def test_every_body_is_what_the_converter_unstructures(self, batch: list[object]) -> None:
        """Plain classes go to msgspec as they are, the others through cattrs:
        either way the maps are the ones cattrs makes (key order aside)."""
        converter = make_converter()
        expected = [[type(m).__name__, converter.unstructure(m)] for m in batch]
        assert msgspec.msgpack.decode(CODEC.encode(batch)) == msgspec.msgpack.decode(
            msgspec.msgpack.encode(expected))

    def test_only_classes_msgspec_encodes_alike_skip_cattrs(self) -> None:
        """Ping and Inner hold only scalars; Job holds enums; Hidden a private
        and an init=False field; HoldsHidden a Hidden; Node is recursive."""
        codec = Codec([Ping, Inner, Job, Hidden, HoldsHidden, Node], protocol=1)
        direct = {tag for tag, cls in codec.tags.items() if codec._encoders[cls][1] is None}
        assert direct == {"Ping", "Inner", "Node"}

    def test_private_and_derived_fields_are_encoded_as_cattrs_does(self) -> None:
        codec = Codec([Hidden, HoldsHidden], protocol=1)
        message = HoldsHidden(hidden=Hidden(secret=7, shown=3), note="n")
        assert msgspec.msgpack.decode(codec.encode([message])) == [
            ["HoldsHidden", {"hidden": {"_secret": 7, "shown": 3}, "note": "n"}]]
        assert codec.decode(codec.encode([message])) == [message]

    def test_a_given_converter_is_always_asked(self) -> None:
        converter = make_converter()
        converter.register_unstructure_hook(Inner, lambda inner: {"label": inner.label.upper(),
                                                                   "weight": inner.weight})
        codec = Codec([Inner], protocol=1, converter=converter)
        assert msgspec.msgpack.decode(codec.encode([Inner(label="a", weight=1.0)])) == [
            ["Inner", {"label": "A", "weight": 1.0}]]


class TestRegistration:
    def test_tags_are_class_names(self) -> None:
        """Each class travels under its __name__."""
        assert dict(CODEC.tags) == {"Ping": Ping, "Inner": Inner, "Job": Job, "Checked": Checked}
        assert CODEC.tag_of(Job) == "Job"
        assert CODEC.protocol == 1

    def test_registering_a_class_twice_is_harmless(self) -> None:
        """The same class listed twice is registered once."""
        assert dict(Codec([Ping, Ping], protocol=1).tags) == {"Ping": Ping}

    def test_two_classes_with_one_name_are_refused(self) -> None:
        """Two different classes with the same name make a ValueError naming both."""
        with pytest.raises(ValueError) as caught:
            Codec([Ping, _Elsewhere.Ping], protocol=1)
        module = Ping.__module__
        assert str(caught.value) == (
            f"message tag 'Ping' names both {module}.Ping and {module}._Elsewhere.Ping"
        )

    def test_a_class_that_is_not_attrs_is_refused(self) -> None:
        """Only attrs classes can be messages."""
        with pytest.raises(TypeError, match="is not an attrs class"):
            Codec([Color], protocol=1)

    def test_encoding_an_unregistered_message_is_a_type_error(self) -> None:
        """Sending an unregistered class is a bug on the sending side: TypeError, naming it."""
        codec = Codec([Ping], protocol=1)
        with pytest.raises(TypeError) as caught:
            codec.encode([Ping(n=1), Inner(label="a", weight=1.0)])
        assert str(caught.value) == (
            f"{Inner.__module__}.Inner is not a registered message (this codec knows Ping)"
        )

    def test_tag_of_an_unregistered_class_is_a_type_error(self) -> None:
        """tag_of names the class it does not know."""
        with pytest.raises(TypeError, match=r"\.Inner is not a registered message"):
            Codec([Ping], protocol=1).tag_of(Inner)


MALFORMED = [
    pytest.param(b"", "malformed msgpack: Input data was truncated", id="empty"),
    pytest.param(b"\xc1", "malformed msgpack: invalid opcode '\\xc1' (byte 0)", id="bad_opcode"),
    pytest.param(b"\x07", "body is not an array of messages (got int)", id="not_a_list"),
    pytest.param(body_of(["Ping"]), "malformed entry 0: expected [tag, data]", id="short_entry"),
    pytest.param(
        body_of(["Ping", {"n": 1}], "Ping"),
        "malformed entry 1: expected [tag, data]",
        id="bare_tag",
    ),
    pytest.param(body_of(["Foo", {}]), "unknown message tag 'Foo'", id="unknown_tag"),
    pytest.param(body_of([5, {}]), "unknown message tag 5", id="int_tag"),
    pytest.param(
        body_of(["x" * 100, {}]),
        "unknown message tag 'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx'",
        id="long_tag_is_cut",
    ),
    pytest.param(
        body_of(["Ping", {"n": "1"}]),
        "malformed message 'Ping': expected int, got str @ $.n",
        id="str_for_int",
    ),
    pytest.param(
        body_of(["Ping", {"n": True}]),
        "malformed message 'Ping': expected int, got bool @ $.n",
        id="bool_for_int",
    ),
    pytest.param(
        body_of(["Ping", {"n": 1.5}]),
        "malformed message 'Ping': expected int, got float @ $.n",
        id="float_for_int",
    ),
    pytest.param(
        body_of(["Ping", {"n": 1, "payload": 10**9}]),
        "malformed message 'Ping': expected bytes, got int @ $.payload",
        id="int_for_bytes_allocates_nothing",
    ),
    pytest.param(
        body_of(["Ping", {}]),
        "malformed message 'Ping': required field missing @ $.n",
        id="missing_field",
    ),
    pytest.param(
        body_of(["Ping", {"n": 1, "x": 2}]),
        "malformed message 'Ping': extra fields found (x) @ $",
        id="extra_field",
    ),
    pytest.param(
        body_of(["Ping", [1]]),
        "malformed message 'Ping': expected a map, got list @ $",
        id="data_not_a_map",
    ),
    pytest.param(
        body_of(["Checked", {"n": -1}]),
        "malformed message 'Checked': 'n' must be >= 0: -1 @ $",
        id="validator_refuses",
    ),
    pytest.param(
        body_of(["Inner", {"label": b"a", "weight": 1.0}]),
        "malformed message 'Inner': expected str, got bytes @ $.label",
        id="bytes_for_str",
    ),
]


class TestDecodeRefuses:
    @pytest.mark.parametrize(("body", "reason"), MALFORMED)
    def test_bad_bodies_are_frame_errors_with_a_short_reason(
        self, body: bytes, reason: str
    ) -> None:
        """Each kind of bad body raises FrameError with its exact reason."""
        with pytest.raises(FrameError) as caught:
            CODEC.decode(body)
        assert str(caught.value) == reason

    @pytest.mark.parametrize(
        ("job_fields", "reason"),
        [
            pytest.param(
                {"labels": "abc"}, "expected an array, got str @ $.labels", id="str_for_tuple"
            ),
            pytest.param(
                {"flags": "abc"}, "expected an array, got str @ $.flags", id="str_for_set"
            ),
            pytest.param({"labels": ["a", 1]}, "expected str, got int @ $.labels[1]", id="element"),
            pytest.param(
                {"pair": [1, 2]}, "expected str, got int @ $.pair[1]", id="hetero_tuple_element"
            ),
            pytest.param(
                {"options": [1]}, "expected a map, got list @ $.options", id="list_for_dict"
            ),
            pytest.param(
                {"options": {"k": "v"}}, "expected int, got str @ $.options['k']", id="dict_value"
            ),
            pytest.param(
                {"inner": {"label": "a", "weight": 1.0, "z": 0}},
                "extra fields found (z) @ $.inner",
                id="nested_extra_field",
            ),
            pytest.param(
                {"inners": [{"label": 1, "weight": 1.0}]},
                "expected str, got int @ $.inners[0].label",
                id="nested_in_tuple",
            ),
            pytest.param(
                {"extra": 1, 7: 1},
                "extra fields found (7, extra) @ $",
                id="non_str_extra_key",
            ),
            pytest.param(
                {"color": "blue"}, "invalid value for type, expected Color @ $.color", id="enum"
            ),
            pytest.param(
                {"level": True}, "expected Level, got bool @ $.level", id="bool_for_int_enum"
            ),
            pytest.param({"urgent": 1}, "expected bool, got int @ $.urgent", id="int_for_bool"),
            pytest.param(
                {"labels": [1, 2, 3, 4, 5]},
                "expected str, got int @ $.labels[0]; expected str, got int @ $.labels[1]; "
                "expected str, got int @ $.labels[2]; and 2 more",
                id="many_problems_are_summarised",
            ),
        ],
    )
    def test_job_fields_are_structured_strictly(
        self, job_fields: dict[str, Any], reason: str
    ) -> None:
        """A field of the wrong shape is refused, never coerced, with the path to it."""
        good = make_converter().unstructure(_a_job())
        with pytest.raises(FrameError) as caught:
            CODEC.decode(body_of(["Job", good | job_fields]))
        assert str(caught.value) == f"malformed message 'Job': {reason}"

    def test_a_long_reason_is_cut(self) -> None:
        """A reason that would flood a log line is cut to 200 characters."""
        data = make_converter().unstructure(_a_job()) | {"k" * 500: 1}
        body = body_of(["Job", data])
        with pytest.raises(FrameError) as caught:
            CODEC.decode(body)
        assert len(str(caught.value)) == 200
        assert str(caught.value).endswith("...")

    def test_a_recursive_message_is_checked_at_every_depth(self) -> None:
        """A self-referencing class round-trips, and a bad value deep inside is found."""
        codec = Codec([Node], protocol=1)
        tree = Node(name="a", children=(Node(name="b", children=(Node(name="c"),)),))
        assert codec.decode(codec.encode([tree])) == [tree]
        bad = {"name": "a", "children": [{"name": "b", "children": [["c"]]}]}
        with pytest.raises(FrameError) as caught:
            codec.decode(body_of(["Node", bad]))
        assert str(caught.value) == (
            "malformed message 'Node': expected a map, got list @ $.children[0].children[0]"
        )

    def test_absurdly_deep_nesting_is_a_frame_error(self) -> None:
        """Nesting deeper than the interpreter's recursion limit is refused, not a crash."""
        body = b"\x91" * 100_000 + b"\x90"
        with pytest.raises(FrameError) as caught:
            CODEC.decode(body)
        assert str(caught.value) == (
            "malformed msgpack: maximum recursion depth exceeded while deserializing an object"
        )

    @given(st.binary())
    def test_arbitrary_bytes_raise_only_frame_error(self, body: bytes) -> None:
        """Whatever bytes arrive, decode returns messages or raises FrameError."""
        with contextlib.suppress(FrameError):
            CODEC.decode(body)

    @given(st.lists(wire_entries, max_size=4))
    def test_arbitrary_wire_data_raises_only_frame_error(self, entries: list[Any]) -> None:
        """Whatever msgpack a peer sends, decode returns messages or raises FrameError."""
        try:
            decoded = CODEC.decode(body_of(*entries))
        except FrameError:
            return
        assert all(type(m) in (Ping, Inner, Job, Checked) for m in decoded)


class TestConverter:
    def test_the_converter_is_strict_on_its_own(self) -> None:
        """make_converter refuses coercions and extra keys outside the codec too."""
        converter = make_converter()
        with pytest.raises(cattrs.ClassValidationError):
            converter.structure({"n": "1"}, Ping)
        with pytest.raises(cattrs.ClassValidationError):
            converter.structure({"n": 1, "extra": 2}, Ping)
        assert converter.structure({"n": 1, "payload": b"a"}, Ping) == Ping(n=1, payload=b"a")

    def test_a_given_converter_is_used(self) -> None:
        """A codec uses the converter it is given, hooks and all."""
        converter = make_converter()
        converter.register_unstructure_hook(
            Inner, lambda inner: {"label": inner.label.upper(), "weight": inner.weight}
        )
        codec = Codec([Inner], protocol=1, converter=converter)
        assert codec.decode(codec.encode([Inner(label="a", weight=1.0)])) == [
            Inner(label="A", weight=1.0)
        ]


def _a_job() -> Job:
    return Job(
        id=1,
        name="send_email",
        payload=b"\x80\x05",
        score=0.5,
        parent=None,
        labels=("a", "b"),
        pair=(1, "x"),
        inner=Inner(label="i", weight=1.0),
        inners=(),
        maybe_inner=None,
        color=Color.RED,
        level=Level.LOW,
        flags=frozenset({"f"}),
        urgent=False,
        options={"k": 1},
    )
