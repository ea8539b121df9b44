"""Messages <-> bytes: the body of every frame that crosses a process.

An edge actor hands a batch of message objects to ``Codec.encode`` and gets
one msgpack body; ``actors.frame.Framer`` wraps that body in a header (and an
auth tag) before a ``Wire`` moves it. On the way in, ``Codec.decode`` is the
first code to look at a peer's data after the frame is authenticated, so it
trusts nothing: every problem becomes one short ``FrameError``.

The body is a msgpack array of ``[tag, data]`` pairs. ``tag`` is the message
class's ``__name__``; ``data`` is what the cattrs converter from
``make_converter`` unstructures the frozen attrs message into: a map of field
names to plain values. Structuring back is strict (an int field takes only an
int, a bytes field only bytes): cattrs' lax defaults would turn a peer's
``10**9`` for a bytes field into a gigabyte of zeros.

Decoding is on every hot path, so with the default converter a message is
first built by ``msgspec.convert`` in strict mode (about ten times faster
than cattrs), plus a check that no map holds a key its class lacks; only
data that this fast path refuses goes through cattrs, which then either
builds it (a type msgspec does not know) or says precisely what is wrong.
Encoding is on every hot path too: with the default converter, a class
msgspec encodes exactly as cattrs would unstructure it (scalars, tuples,
nested classes of public fields; see ``_plain``) goes to msgspec as it is,
about three times faster than through cattrs.
"""

from __future__ import annotations

import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, final, get_args, get_origin

import attrs
import cattrs
import msgspec
from cattrs.cols import is_frozenset, is_mapping, is_sequence, is_set
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.v import format_exception, transform_error

from actors.errors import FrameError

__all__ = ["Codec", "make_converter"]

#: How many field problems one FrameError lists before "and N more".
_MAX_PROBLEMS: Final = 3
#: A FrameError reason longer than this is cut: it goes into a log line.
_MAX_REASON: Final = 200

_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40


class _WireTypeError(TypeError):
    """A wire value of the wrong msgpack type; its text is the readable reason."""


def make_converter() -> cattrs.Converter:
    """Make a cattrs converter suited to data from another process.

    Unstructuring gives what msgpack encodes directly: attrs classes become
    dicts, tuples become lists, enums their values, bytes stay bytes.
    Structuring forbids extra keys and never coerces: ``int``, ``float``
    (which also takes an int), ``str``, ``bytes`` and ``bool`` fields accept
    only their own type, collections only arrays, attrs classes and dicts only
    maps. A failure names the type wanted and the type got
    ("expected int, got str @ $.n").

    Returns:
        A new converter; callers may register more hooks on it.
    """
    converter = cattrs.Converter(forbid_extra_keys=True)
    # These go to cattrs' singledispatch, which it consults before anything
    # else, so subclasses (IntEnum, bool under int, StrEnum) land here too.
    for wire_type in (int, float, str, bytes, bool):
        converter.register_structure_hook(wire_type, _strict_scalar(wire_type))
    _guard(converter, attrs.has, (dict,), "a map")
    _guard(converter, is_mapping, (dict,), "a map")
    _guard(converter, _is_collection, (list, tuple, set, frozenset), "an array")
    return converter


def _strict_scalar(wire_type: type) -> Callable[[Any, type], Any]:
    accepted: tuple[type, ...] = (int, float) if wire_type is float else (wire_type,)

    def structure(value: Any, cls: type) -> Any:
        # `type(...) in` rather than isinstance: bool must not pass for int.
        if type(value) not in accepted:
            raise _WireTypeError(f"expected {cls.__name__}, got {type(value).__name__}")
        return value if cls is type(value) else cls(value)

    return structure


def _is_collection(cls: Any) -> bool:
    # is_sequence misses heterogeneous tuples (tuple[int, str]).
    return is_sequence(cls) or is_set(cls) or is_frozenset(cls) or get_origin(cls) is tuple


def _guard(
    converter: cattrs.Converter,
    predicate: Callable[[Any], bool],
    accepted: tuple[type, ...],
    expected: str,
) -> None:
    """Put a shape check in front of the hooks cattrs makes for ``predicate``.

    cattrs' own hooks iterate whatever they get, so a str would fill a tuple
    with characters. The factory asks the converter for the hook it would
    have made, while ``building`` hides this factory from that one lookup.
    """
    building: set[Any] = set()

    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        building.add(cls)
        try:
            inner = converter.get_structure_hook(cls, cache_result=False)
        finally:
            building.discard(cls)

        def structure(value: Any, cls: Any) -> Any:
            if not isinstance(value, accepted):
                raise _WireTypeError(f"expected {expected}, got {type(value).__name__}")
            return inner(value, cls)

        return structure

    converter.register_structure_hook_factory(
        lambda cls: cls not in building and predicate(cls), factory
    )


def _describe(error: Exception) -> str:
    """One line for a structuring failure: at most a few problems, with paths."""
    try:
        problems = transform_error(error, format_exception=_format_problem)
    except Exception:  # a formatting bug must not let a hostile frame through
        problems = [type(error).__name__]
    if len(problems) > _MAX_PROBLEMS:
        more = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], f"and {more} more"]
    return "; ".join(problems)


def _format_problem(error: BaseException, cls: type | None) -> str:
    if isinstance(error, _WireTypeError):
        return str(error)
    if isinstance(error, ForbiddenExtraKeysError):
        # cattrs' own formatter sorts the keys, and fails on a peer's int keys.
        names = sorted(
            _short.repr(key) if type(key) is not str else key for key in error.extra_fields
        )
        return f"extra fields found ({', '.join(names)})"
    if cls is None and isinstance(error, (ValueError, TypeError)):
        return str(error) or type(error).__name__
    return format_exception(error, cls)


def _cut(reason: str) -> str:
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."


@final
class Codec:
    """Encodes batches of messages into msgpack bodies and decodes them back.

    The (un)structure functions for each class are generated once, here, so
    ``encode`` and ``decode`` do one dict lookup and one generated call per
    message.

    Args:
        messages: The frozen attrs message classes this end may send or
            receive. Each is known on the wire by its ``__name__``.
        protocol: The version of this set of messages; the frame header
            carries it, and a peer with another one is refused.
        converter: The converter to use; ``make_converter()`` when omitted.

    Raises:
        ValueError: Two different classes share a name.
        TypeError: A class is not an attrs class.
    """

    def __init__(
        self,
        messages: Iterable[type],
        *,
        protocol: int,
        converter: cattrs.Converter | None = None,
    ) -> None:
        self.protocol: Final = protocol
        self._converter = make_converter() if converter is None else converter
        tags: dict[str, type] = {}
        for cls in messages:
            if not attrs.has(cls):
                raise TypeError(f"{cls!r} is not an attrs class; messages must be")
            tag = cls.__name__
            known = tags.setdefault(tag, cls)
            if known is not cls:
                raise ValueError(
                    f"message tag {tag!r} names both {_qualified(known)} and {_qualified(cls)}"
                )
        self._tags = tags
        self.tags: Final[Mapping[str, type]] = MappingProxyType(tags)
        # With the default converter, a class whose fields msgspec encodes as
        # cattrs unstructures them goes to msgspec as it is (about three
        # times faster): its encoder is ``None``.
        self._encoders: dict[type, tuple[str, Callable[[Any], Any] | None]] = {
            cls: (tag, None if converter is None and _plain(cls, {})
                  else self._converter.get_unstructure_hook(cls))
            for tag, cls in tags.items()
        }
        self._decoders: dict[str, tuple[type, Callable[[Any, Any], Any]]] = {
            tag: (cls, self._converter.get_structure_hook(cls)) for tag, cls in tags.items()
        }
        # The fast path knows only the default converter's rules.
        self._fast: dict[str, Callable[[Any], bool]] = (
            {tag: _keys_checker(cls) for tag, cls in tags.items()} if converter is None else {}
        )
        self._msgpack_encoder = msgspec.msgpack.Encoder()
        self._msgpack_decoder = msgspec.msgpack.Decoder()

    def __repr__(self) -> str:
        return f"<Codec protocol={self.protocol} tags={sorted(self._tags)}>"

    def tag_of(self, cls: type) -> str:
        """Return the tag ``cls`` travels under.

        Raises:
            TypeError: ``cls`` is not registered with this codec.
        """
        try:
            return self._encoders[cls][0]
        except KeyError:
            raise self._not_registered(cls) from None

    def encode(self, messages: Sequence[object]) -> bytes:
        """Encode a batch of messages into one msgpack body.

        Raises:
            TypeError: A message's class is not registered. That is a bug on
                this, the sending, side.
        """
        encoders = self._encoders
        try:
            batch = [
                (tag, message if unstructure is None else unstructure(message))
                for message in messages
                for tag, unstructure in (encoders[type(message)],)
            ]
        except KeyError:
            unknown = next(m for m in messages if type(m) not in encoders)
            raise self._not_registered(type(unknown)) from None
        return self._msgpack_encoder.encode(batch)

    def decode(self, body: bytes) -> list[object]:
        """Decode a body into its messages, trusting nothing in it.

        Raises:
            FrameError: The body is not msgpack, not an array of
                ``[tag, data]`` pairs, names a tag not registered here, or
                holds data that does not structure into its class. The reason
                is short and names the message ("malformed message 'Ping':
                expected int, got str @ $.n").
        """
        try:
            batch = self._msgpack_decoder.decode(body)
        except Exception as error:  # msgspec.DecodeError, and anything odder
            detail = str(error).removeprefix("MessagePack data is malformed: ")
            raise FrameError(_cut(f"malformed msgpack: {detail}")) from None
        if type(batch) is not list:
            raise FrameError(f"body is not an array of messages (got {type(batch).__name__})")
        decoders = self._decoders
        messages: list[object] = []
        for index, entry in enumerate(batch):
            if type(entry) is not list or len(entry) != 2:
                raise FrameError(f"malformed entry {index}: expected [tag, data]")
            tag, data = entry
            decoder = decoders.get(tag) if type(tag) is str else None
            if decoder is None:
                raise FrameError(_cut(f"unknown message tag {_short.repr(tag)}"))
            cls, structure = decoder
            known_keys = self._fast.get(tag)
            if known_keys is not None and type(data) is dict:
                try:
                    message: object = msgspec.convert(data, cls, strict=True)
                except Exception:  # refused: cattrs says why, or builds it after all
                    pass
                else:
                    if known_keys(data):
                        messages.append(message)
                        continue
            try:
                messages.append(structure(data, cls))
            except Exception as error:
                raise FrameError(_cut(f"malformed message {tag!r}: {_describe(error)}")) from None
        return messages

    def _not_registered(self, cls: type) -> TypeError:
        return TypeError(
            f"{_qualified(cls)} is not a registered message "
            f"(this codec knows {', '.join(sorted(self._tags)) or 'none'})"
        )


def _keys_checker(
    cls: type, made: dict[type, Callable[[Any], bool]] | None = None
) -> Callable[[Any], bool]:
    """A check that the map ``data`` of an attrs class ``cls``, and every
    map of an attrs class nested in it, holds only keys that are fields
    (``msgspec.convert`` ignores the others; the codec refuses them)."""
    made = {} if made is None else made
    if cls in made:  # a recursive class: the check being made
        return lambda data: made[cls](data)
    made[cls] = lambda data: False
    names = frozenset(field.name for field in attrs.fields(cls))
    hints = typing.get_type_hints(cls)
    nested = [
        (name, field_check) for name in sorted(names)
        if (field_check := _nested_checker(hints.get(name), made)) is not None
    ]

    def check(data: Any) -> bool:
        if not data.keys() <= names:
            return False
        for name, check_value in nested:
            value = data.get(name)
            if value is not None and not check_value(value):
                return False
        return True

    made[cls] = check
    return check


def _nested_checker(
    hint: Any, made: dict[type, Callable[[Any], bool]]
) -> Callable[[Any], bool] | None:
    """The keys check of the maps a field of type ``hint`` may hold, or
    ``None`` if it holds no attrs class."""
    if isinstance(hint, type) and attrs.has(hint):
        return _keys_checker(hint, made)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        checks = [c for arg in args if arg is not type(None) and (c := _nested_checker(arg, made))]
        if not checks:
            return None
        if len(checks) > 1:
            return lambda value: False  # an ambiguous union: let cattrs decide
        return checks[0]
    if origin in (tuple, list, frozenset, set) or (
        isinstance(origin, type) and issubclass(origin, Sequence)
    ):
        element = _nested_checker(args[0], made) if args else None
        if element is None:
            return None
        check_element = element
        return lambda value: all(check_element(item) for item in value)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        values = _nested_checker(args[1], made) if len(args) == 2 else None
        if values is None:
            return None
        check_values = values
        return lambda value: all(check_values(item) for item in value.values())
    return None


#: Types msgspec encodes as the default converter unstructures them
#: (cattrs hands these to msgspec unchanged).
_PLAIN_SCALARS: Final = frozenset({str, int, float, bool, bytes, type(None)})


def _plain(hint: Any, seen: dict[type, bool]) -> bool:
    """Whether msgspec encodes a value of type ``hint`` exactly as the
    default converter's unstructuring would be encoded: scalars, literals,
    tuples, lists, sets and str-keyed maps of such, and attrs classes whose
    fields are all such and all public ``__init__`` arguments (msgspec
    skips a private field and encodes an ``init=False`` one; cattrs does the
    opposite). Anything else (``Any``, enums, dataclasses) is not.
    ``seen`` holds the classes under way: a class met again inside itself
    counts as plain, which is right for the outermost class asked about
    (anything not plain inside the cycle makes it not plain), so each
    message class gets a ``seen`` of its own."""
    if hint in _PLAIN_SCALARS:
        return True
    if isinstance(hint, type) and attrs.has(hint):
        if hint in seen:  # a recursive class: as plain as the rest of it
            return seen[hint]
        seen[hint] = True
        hints = typing.get_type_hints(hint)
        seen[hint] = all(
            field.init and not field.name.startswith("_") and field.alias == field.name
            and _plain(hints.get(field.name), seen)
            for field in attrs.fields(hint)
        )
        return seen[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin is typing.Literal:
        return all(type(arg) in (str, int, bool) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return all(_plain(arg, seen) for arg in args)
    if origin in (tuple, list, frozenset, set):
        return all(arg is Ellipsis or _plain(arg, seen) for arg in args)
    if origin is dict:
        return len(args) == 2 and args[0] is str and _plain(args[1], seen)
    return False


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
