"""A safe look inside payloads, for people (the dashboard's task page).

``peek_call`` and ``peek_value`` turn pickled arguments and results into
short text without running any code of the pickle: the unpickler here
builds only plain data (numbers, strings, containers, dates, decimals,
UUIDs) and a stand-in for every other class or function a pickle names,
which shows its name and what it was built from but never imports or calls
it. A ``__reduce__`` that would run ``os.system`` shows as
``os.system('...')`` instead of running. The text is cut to bounds (items
per container, depth, characters), so a huge or deeply nested payload
costs little to show.
"""

from __future__ import annotations

import builtins
import datetime
import decimal
import fractions
import io
import pickle
import reprlib
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, ClassVar

from fastworker.payload import split_inputs, split_parts, wants_parts

#: Payloads larger than this are described by size only.
PEEK_MAX_BYTES = 1024 * 1024
#: The longest text returned.
PEEK_MAX_CHARS = 4000

# Classes whose construction from pickled data runs no user code.
_SAFE: dict[tuple[str, str], Any] = {
    ("builtins", name): getattr(builtins, name)
    for name in ("set", "frozenset", "complex", "bytearray", "slice", "range",
                 "list", "dict", "tuple", "str", "bytes", "int", "float", "bool")
}
_SAFE.update({
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("fractions", "Fraction"): fractions.Fraction,
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "deque"): deque,
    ("uuid", "UUID"): uuid.UUID,
})


class _Stand:
    """An object of a class the peek does not load: its name, the arguments
    it was built with and the state it was given."""

    _name = "?"
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any]
    _state: Any
    _items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stand:
        self = object.__new__(cls)
        self._args = args
        self._kwargs = kwargs
        self._state = None
        self._items = []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            self._args, self._kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self._state = state

    # Unpickling a list or dict subclass adds its items with these.
    def append(self, item: Any) -> None:
        self._items.append(item)

    def extend(self, items: Any) -> None:
        self._items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._items.append((key, value))

    def __call__(self, *args: Any, **kwargs: Any) -> _Stand:
        # A stand-in function applied to arguments (``REDUCE``) shows as the call.
        called = type(self)(*args, **kwargs)
        return called

    def show(self, shower: _Shower, level: int) -> str:
        if self._name.startswith("cloudpickle.") and self._name.endswith("._make_function"):
            state = self._state[1] if isinstance(self._state, tuple) else self._state
            name = state.get("__qualname__") if isinstance(state, dict) else None
            return f"<function {name or '(sent by value)'}>"
        parts = [shower.repr1(a, level - 1) for a in self._args]
        parts += [f"{k}={shower.repr1(v, level - 1)}" for k, v in self._kwargs.items()]
        state = self._state
        if isinstance(state, tuple) and len(state) == 2 and state[0] is None:
            state = state[1]  # (None, slots): objects with __slots__
        if isinstance(state, dict):
            parts += [f"{k}={shower.repr1(v, level - 1)}" for k, v in list(state.items())[:16]]
        elif state is not None:
            parts.append(shower.repr1(state, level - 1))
        if self._items:
            parts.append(shower.repr1(self._items, level - 1))
        return f"{self._name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return self.show(_SHOWER, _SHOWER.maxlevel)


class _Unpickler(pickle._Unpickler):  # the Python one: its opcodes can be replaced
    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    # Set by pickle._Unpickler.load (not in its stubs).
    stack: list[Any]
    append: Callable[[Any], None]

    def _new_object(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if isinstance(cls, type) and not issubclass(cls, _Stand):
            return cls.__new__(cls, *args, **kwargs)
        # A stand-in made a "class" (cloudpickle builds classes by value:
        # ``_make_skeleton_class(type, name, ...)``).
        name = getattr(cls, "_name", type(cls).__name__)
        made: tuple[Any, ...] = getattr(cls, "_args", ())
        if len(made) > 1 and isinstance(made[1], str):
            name = made[1]
        return type(name, (_Stand,), {"_name": name})(*args, **kwargs)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args, {}))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args, kwargs))

    dispatch[ord(pickle.NEWOBJ)] = load_newobj
    dispatch[ord(pickle.NEWOBJ_EX)] = load_newobj_ex

    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE.get((module, name))
        if safe is not None:
            return safe
        qualified = f"{module}.{name}"
        return type(name, (_Stand,), {"_name": qualified})

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent references are not shown")


class _Shower(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 5
        self.maxtuple = self.maxlist = self.maxarray = 20
        self.maxdict = self.maxset = self.maxfrozenset = self.maxdeque = 20
        self.maxstring = 300
        self.maxlong = 100
        self.maxother = 300

    def repr_instance(self, x: Any, level: int) -> str:
        if isinstance(x, _Stand):
            return x.show(self, level) if level > 0 else f"{x._name}(...)"
        if isinstance(x, type) and issubclass(x, _Stand):
            return x._name
        return super().repr_instance(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        text = repr(x[: self.maxstring])
        return text if len(x) <= self.maxstring else f"{text}...({len(x)} bytes)"


_SHOWER = _Shower()


def _load(data: bytes) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


def _cut(text: str) -> str:
    if len(text) <= PEEK_MAX_CHARS:
        return text
    return f"{text[:PEEK_MAX_CHARS]}... ({len(text) - PEEK_MAX_CHARS} more characters)"


def _unshowable(data: bytes, error: BaseException | None = None) -> str:
    if error is None:
        return f"<{len(data)} bytes, too large to show>"
    return f"<{len(data)} bytes that cannot be shown: {type(error).__name__}: {error}>"


def peek_call(data: bytes) -> tuple[str, str]:
    """The text of a call's pickled ``(args, kwargs)``: ``("(1, 2)", "{}")``."""
    if len(data) > PEEK_MAX_BYTES:
        return _unshowable(data), ""
    try:
        parts = split_inputs(data)  # a workflow step's: its parents' results first
        if parts is None:
            args, kwargs = _load(wants_parts(data)[0])
        else:
            call, inputs, as_list = parts
            args, kwargs = _load(call)
            values = [_load_value(part) for part in inputs]
            args = (values if as_list else values[0], *args)
        return _cut(_SHOWER.repr(tuple(args))), _cut(_SHOWER.repr(dict(kwargs)))
    except Exception as error:  # anything in a payload is data, never a crash
        return _unshowable(data, error), ""


def peek_value(data: bytes) -> str:
    """The text of a pickled task result."""
    if len(data) > PEEK_MAX_BYTES:
        return _unshowable(data)
    try:
        return _cut(_SHOWER.repr(_load_value(data)))
    except Exception as error:
        return _unshowable(data, error)


def _load_value(data: bytes) -> Any:
    """A value, or the list of its parts' values (``payload.join_parts``)."""
    parts = split_parts(data)
    return _load(data) if parts is None else [_load(part) for part in parts]


__all__ = ["PEEK_MAX_BYTES", "PEEK_MAX_CHARS", "peek_call", "peek_value"]
