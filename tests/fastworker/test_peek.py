"""The safe look inside payloads: text for people, and no code of the pickle runs."""

from __future__ import annotations

import datetime
import decimal
import os
import pickle
import uuid
from pathlib import Path

import attrs

from fastworker.payload import pack_call, pack_value
from fastworker.peek import PEEK_MAX_BYTES, PEEK_MAX_CHARS, peek_call, peek_value


class Explodes:
    """Unpickling this would create a file (a stand-in for any harm)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "ran"))


@attrs.define
class Point:
    x: int
    y: int


class Slotted:
    __slots__ = ("a",)

    def __init__(self) -> None:
        self.a = 1


def test_plain_arguments_read_as_python() -> None:
    args = (1, "two", 3.5, None, [1, 2], {"k": (True,)})
    assert peek_call(pack_call(args, {"x": b"y"})) == (repr(args), "{'x': b'y'}")
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert peek_value(pack_value([when, decimal.Decimal("1.5"), uuid.UUID(int=7), {1}])) == (
        repr([when, decimal.Decimal("1.5"), uuid.UUID(int=7), {1}]))


def test_a_pickle_that_would_run_code_is_shown_not_run(tmp_path: Path) -> None:
    target = tmp_path / "harm"
    args, _ = peek_call(pack_call((Explodes(str(target)),), {}))
    assert not target.exists()
    assert "write_text" in args and "harm" in args
    system, _ = peek_call(pickle.dumps(((_System(),), {})))
    assert system == "(posix.system('echo never'),)" or system == "(nt.system('echo never'),)"


class _System:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo never",))


def test_objects_of_user_classes_show_their_name_and_fields() -> None:
    args, kwargs = peek_call(pack_call((Point(1, 2),), {"s": Slotted()}))
    assert args == "(tests.fastworker.test_peek.Point(x=1, y=2),)"
    assert kwargs == "{'s': tests.fastworker.test_peek.Slotted(a=1)}"
    # Sent by value (cloudpickle): shown by name, never rebuilt.
    assert peek_call(pack_call((lambda: 1,), {}))[0] == "(<function (sent by value)>,)"


def test_large_and_deep_payloads_are_cut_to_bounds() -> None:
    text = peek_value(pack_value(list(range(100_000))))
    assert text.endswith("...]") and len(text) < 200
    nested: list[object] = []
    for _ in range(100):
        nested = [nested]
    assert "..." in peek_value(pickle.dumps(nested))
    long = peek_value(pack_value(["x" * 250] * 20))
    assert len(long) <= PEEK_MAX_CHARS + 40 and long.endswith("more characters)")
    big = b"\x80" + b"0" * PEEK_MAX_BYTES
    assert peek_value(big) == f"<{len(big)} bytes, too large to show>"


def test_garbage_is_described_not_raised() -> None:
    assert peek_value(b"not a pickle").startswith("<12 bytes that cannot be shown: ")
    args, kwargs = peek_call(pack_value(42))  # not an (args, kwargs) pair
    assert args.startswith("<") and "cannot be shown" in args and kwargs == ""
