"""Typed configuration from TOML.

Config is attrs classes with their defaults in code; a TOML file only
overrides. ``structure`` turns plain data into such a class with a cattrs
converter that forbids unknown keys and refuses to coerce (``"3"`` is not an
int unless it came from an environment variable, ``1.5`` is never an int),
and turns every problem into one line of the form::

    config/control.toml: $.actors.inbox.capacity: expected an integer, got 'many'

String values may reference environment variables, ``"${NAME}"`` or
``"${NAME:-default}"``, which is how a user overrides an address or a
secret without editing the file. A value that is entirely one reference
and fills a number or boolean field is converted from its text.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from actors.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

T = TypeVar("T")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class _Expected(ValueError):
    """A value of the wrong type; its text is the whole explanation."""


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file.

    Raises:
        ConfigError: the file is missing, unreadable or not valid TOML; the
            line names the file and, for syntax errors, where.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            data: dict[str, Any] = tomllib.load(file)
            return data
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


def expand_env(
    data: Any, *, source: str, path: str = "$", environ: Mapping[str, str] | None = None
) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of
    ``data`` (recursively) with the environment's values.

    Raises:
        ConfigError: a variable without a default is not set.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, str):
            return _expand(value, where)
        if isinstance(value, dict):
            return {key: walk(item, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return value

    def _expand(text: str, where: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(
                f"{source}: {where}: environment variable {name} is not set and has "
                f"no default (write ${{{name}:-default}} to give one)"
            )
            return ""

        expanded = _ENV_REF.sub(substitute, text)
        if expanded != text and _ENV_REF.fullmatch(text):
            return _FromEnv(expanded)
        return expanded

    result = walk(data, path)
    if problems:
        raise ConfigError(problems)
    return result


class _FromEnv(str):
    """Text that came whole from an environment variable: a number or
    boolean field may convert it."""


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, _FromEnv):
        try:
            return int(value)
        except ValueError:
            pass
    raise _Expected(f"expected an integer, got {value!r}")


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, _FromEnv):
        try:
            return float(value)
        except ValueError:
            pass
    raise _Expected(f"expected a number, got {value!r}")


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, _FromEnv) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _Expected(f"expected true or false, got {value!r}")


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return str(value)
    raise _Expected(f"expected a string, got {value!r}")


def _is_literal(type_: Any) -> bool:
    origin: object = typing.get_origin(type_)
    return origin is typing.Literal


def _structure_literal(value: Any, type_: Any) -> Any:
    allowed = typing.get_args(type_)
    if value in allowed:
        return value
    listing = ", ".join(repr(v) for v in allowed)
    raise _Expected(f"expected one of {listing}, got {value!r}")


def make_config_converter() -> cattrs.Converter:
    """A converter for config: unknown keys are errors, scalars are strict."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook_func(_is_literal, _structure_literal)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(str, _structure_str)
    return converter


_CONVERTER = make_config_converter()


def structure(
    data: Any,
    cls: type[T],
    *,
    source: str,
    path: str = "$",
    converter: cattrs.Converter | None = None,
) -> T:
    """Structure plain data into the attrs class ``cls``.

    Args:
        data: what TOML gave (after ``expand_env``).
        cls: the target attrs class.
        source: the file name for error lines.
        path: where ``data`` sits in the file, e.g. ``$.actors.inbox``.

    Raises:
        ConfigError: one line per problem, "<source>: <path>: <problem>".
    """
    converter = converter or _CONVERTER
    if not isinstance(data, Mapping) and attrs.has(cls):
        raise ConfigError(f"{source}: {path}: expected a table, got {data!r}")
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as error:
        lines = cattrs.transform_error(error, path=path, format_exception=_format_exception)
        raise ConfigError([_relocate(line, source) for line in lines]) from None
    except (ValueError, TypeError) as error:
        # attrs validators run in __init__, after the fields were structured.
        raise ConfigError(f"{source}: {path}: {error}") from None


def _relocate(line: str, source: str) -> str:
    """cattrs says "<problem> @ <path>"; we say "<source>: <path>: <problem>"."""
    problem, _, where = line.rpartition(" @ ")
    return f"{source}: {where}: {problem}"


def _format_exception(error: BaseException, type_: Any) -> str:
    if isinstance(error, _Expected):
        return str(error)
    if isinstance(error, ForbiddenExtraKeysError):
        known = sorted(f.name for f in attrs.fields(error.cl)) if attrs.has(error.cl) else []
        parts = []
        for key in sorted(error.extra_fields):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"unknown option {key!r}{hint}")
        listing = ", ".join(known) if known else "none"
        return f"{'; '.join(parts)}; known options: {listing}"
    if isinstance(error, KeyError):
        return "required option missing"
    if isinstance(error, ValueError) and type_ is None and str(error):
        return str(error)  # an attrs validator's own message
    return cattrs.v.format_exception(error, type_)
