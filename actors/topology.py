"""Topologies: named actors and their wiring, from Python or from TOML.

A TOML topology reads::

    [node]
    name = "pingpong"
    shutdown_deadline = 5.0          # seconds to finish in-flight work

    [node.supervision]               # actors.RestartPolicy
    strategy = "one_for_one"
    max_restarts = 5
    within = 60.0

    [actors.pong]
    kind = "examples.pingpong:Ponger"   # or a registered short name
    refs = { reply = "ping" }           # wiring: ref name -> actor name
    mailbox = 1024                      # inbox capacity (optional)
    delay = 0.0                         # every other key is an option

The same in Python::

    topology = Topology(name="pingpong")
    topology.add("pong", Ponger, refs={"reply": "ping"}, delay=0.0)

``Topology.resolve`` checks everything at once (kinds, options, wiring) and
raises one ``ConfigError`` listing every problem, each naming the file, the
key, what was expected and what was found. Kinds resolve through the
``actors.kinds`` entry-point group, ``register_kind``, or a
``package.module:Class`` path, so a composition can name actors of upper
layers without this package importing them.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from actors import config
from actors.actor import Actor
from actors.errors import ConfigError, WiringError
from actors.mailbox import DEFAULT_CAPACITY
from actors.supervisor import RestartPolicy

#: The entry-point group that maps short kind names to actor classes.
KINDS_GROUP = "actors.kinds"
#: Keys of an ``[actors.NAME]`` table that are not options.
RESERVED_KEYS = ("kind", "refs", "mailbox")

_registered: dict[str, type[Actor[Any]]] = {}


def register_kind(name: str, cls: type[Actor[Any]]) -> None:
    """Give an actor class a short kind name for topologies built in this
    process (installed packages use the ``actors.kinds`` entry points)."""
    _registered[name] = cls


def known_kinds() -> list[str]:
    """Every short kind name available, sorted."""
    names = set(_registered)
    names.update(ep.name for ep in importlib.metadata.entry_points(group=KINDS_GROUP))
    return sorted(names)


def resolve_kind(kind: str | type[Actor[Any]]) -> type[Actor[Any]]:
    """The actor class for a kind name, a ``module:Class`` path, or a class.

    Raises:
        ValueError: with a readable reason (unknown name, import failure,
            not an actor class).
    """
    if isinstance(kind, type):
        cls: Any = kind
    elif ":" in kind:
        module_name, _, attribute = kind.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise ValueError(
                f"cannot import module {module_name!r}: {type(error).__name__}: {error}"
            ) from None
        try:
            cls = getattr(module, attribute)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no {attribute!r}") from None
    elif kind in _registered:
        cls = _registered[kind]
    else:
        found = importlib.metadata.entry_points(group=KINDS_GROUP, name=kind)
        if not found:
            names = known_kinds()
            close = difflib.get_close_matches(kind, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown kind {kind!r}; {hint}known kinds: {', '.join(names) or 'none'} "
                f"(a kind is a registered short name or 'package.module:Class')"
            )
        cls = next(iter(found)).load()
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ValueError(f"{kind!r} is not an actor class (got {cls!r})")
    return cls


def kind_name(kind: str | type[Actor[Any]]) -> str:
    """How a kind is shown in logs and snapshots."""
    if isinstance(kind, str):
        return kind
    return f"{kind.__module__}:{kind.__qualname__}"


@attrs.frozen(kw_only=True)
class NodeOptions:
    """The ``[node]`` table.

    Attributes:
        name: the node's name in logs.
        imports: modules to import before anything starts (the modules that
            define a control plane's tasks, say); an entry may hold several
            names separated by commas, so one environment variable can
            name a list (``["${FASTWORKER_TASKS:-}"]``).
        shutdown_deadline: seconds a graceful stop waits for actors to
            finish what they hold before cancelling them.
        supervision: how crashes are answered.
    """

    name: str = "node"
    imports: list[str] = attrs.field(factory=list)
    shutdown_deadline: float = 10.0
    supervision: RestartPolicy = RestartPolicy()

    def modules(self) -> list[str]:
        """The module names of ``imports``, commas split."""
        return [name.strip() for entry in self.imports for name in entry.split(",") if name.strip()]


@attrs.frozen(kw_only=True)
class ActorSpec:
    """One actor of a topology, before it is resolved.

    ``options`` is plain data (structured into the kind's ``Options``) or
    already an instance of it. ``params`` are extra keyword arguments for
    the constructor, for Python compositions only (a wire to use instead of
    a socket, say).
    """

    name: str
    kind: str | type[Actor[Any]]
    options: Any = attrs.field(factory=dict)
    refs: Mapping[str, str] = attrs.field(factory=dict)
    mailbox: int = DEFAULT_CAPACITY
    params: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ResolvedActor:
    """An actor ready to build: its class, structured options and wiring."""

    spec: ActorSpec
    cls: type[Actor[Any]]
    options: Any


@attrs.define
class Topology:
    """Named actors and their wiring; what a node runs."""

    name: str = "node"
    actors: list[ActorSpec] = attrs.field(factory=list)
    node: NodeOptions = attrs.field(factory=NodeOptions)
    source: str = "<python>"

    def add(
        self,
        name: str,
        kind: str | type[Actor[Any]],
        *,
        refs: Mapping[str, str] | None = None,
        mailbox: int = DEFAULT_CAPACITY,
        params: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Topology:
        """Add an actor; returns the topology so calls chain."""
        self.actors.append(
            ActorSpec(
                name=name,
                kind=kind,
                options=options,
                refs=dict(refs or {}),
                mailbox=mailbox,
                params=dict(params or {}),
            )
        )
        return self

    @classmethod
    def from_toml(
        cls, path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> Topology:
        """Load a topology file (resolve it to check it)."""
        source = os.fspath(path)
        return cls.from_mapping(config.load_toml(path), source=source, environ=environ)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "<mapping>",
        environ: Mapping[str, str] | None = None,
    ) -> Topology:
        """Build a topology from TOML-shaped data, with ``${NAME}``
        references filled from ``environ`` (``os.environ`` by default).

        Raises:
            ConfigError: every problem of shape (unknown sections, bad node
                options, environment references); options of each actor are
                checked by ``resolve``.
        """
        problems: list[str] = []
        data = _collect(problems, lambda: config.expand_env(dict(data), source=source, environ=environ))
        if data is None:
            raise ConfigError(problems)
        for key in data:
            if key not in ("node", "actors"):
                problems.append(f"{source}: $.{key}: unknown section (known: node, actors)")
        node = _collect(
            problems,
            lambda: config.structure(data.get("node", {}), NodeOptions, source=source, path="$.node"),
        )
        actors = data.get("actors", {})
        specs: list[ActorSpec] = []
        if not isinstance(actors, Mapping) or not actors:
            problems.append(f"{source}: $.actors: expected at least one [actors.NAME] table")
            actors = {}
        for name, table in actors.items():
            where = f"$.actors.{name}"
            if not isinstance(table, Mapping):
                problems.append(f"{source}: {where}: expected a table, got {table!r}")
                continue
            spec = _spec_from_table(name, table, source, where, problems)
            if spec is not None:
                specs.append(spec)
        if problems:
            raise ConfigError(problems)
        assert node is not None
        return cls(name=node.name, actors=specs, node=node, source=source)

    def resolve(self) -> list[ResolvedActor]:
        """Check kinds, options and wiring; return the actors in start order.

        Start order puts an actor after the actors it refers to, so what it
        sends to is ready first; otherwise the written order is kept, and a
        cycle is broken at its first-written actor, which starts last of
        the cycle (``ping -> ping_edge -> ping`` starts ping_edge, then ping).

        Raises:
            ConfigError: one line per problem (``WiringError`` when only
                wiring is wrong).
        """
        source = self.source
        problems: list[str] = [_import(module, source) for module in self.node.modules()]
        problems = [problem for problem in problems if problem]
        wiring: list[str] = []
        names = [spec.name for spec in self.actors]
        seen: set[str] = set()
        resolved: list[ResolvedActor] = []
        for spec in self.actors:
            where = f"$.actors.{spec.name}"
            if spec.name in seen:
                problems.append(f"{source}: {where}: a second actor with this name")
            seen.add(spec.name)
            try:
                cls = resolve_kind(spec.kind)
            except ValueError as error:
                problems.append(f"{source}: {where}.kind: {error}")
                continue
            options = spec.options
            if not isinstance(options, cls.Options):
                options = _collect(
                    problems,
                    lambda: config.structure(spec.options, cls.Options, source=source, path=where),
                )
            wiring.extend(_check_refs(spec, cls, names, source, where))
            if options is not None:
                resolved.append(ResolvedActor(spec=spec, cls=cls, options=options))
        if problems or wiring:
            error_cls = WiringError if not problems else ConfigError
            raise error_cls(problems + wiring)
        return _start_order(resolved)


def _import(module: str, source: str) -> str:
    """Import ``module``; return "" or a problem line with the module's own
    part of the traceback (not the import machinery's, not ours)."""
    try:
        importlib.import_module(module)
    except Exception as error:
        frames = [
            frame
            for frame in traceback.extract_tb(error.__traceback__)
            if not frame.filename.startswith("<frozen")
            and Path(frame.filename).resolve() not in (_HERE, _IMPORTLIB)
        ]
        where = "".join(traceback.format_list(frames)).rstrip()
        return (
            f"{source}: $.node.imports: cannot import {module!r}: "
            f"{type(error).__name__}: {error}" + (f"\n{where}" if where else "")
        )
    return ""


_HERE = Path(__file__).resolve()
_IMPORTLIB = Path(importlib.__file__).resolve()


def _collect(problems: list[str], make: Any) -> Any:
    try:
        return make()
    except ConfigError as error:
        problems.extend(error.problems)
        return None


def _spec_from_table(
    name: str, table: Mapping[str, Any], source: str, where: str, problems: list[str]
) -> ActorSpec | None:
    kind = table.get("kind")
    if not isinstance(kind, str):
        found = "nothing" if kind is None else repr(kind)
        problems.append(
            f"{source}: {where}.kind: expected a kind name or 'package.module:Class', got {found}"
        )
        return None
    refs = table.get("refs", {})
    if not isinstance(refs, Mapping) or not all(isinstance(v, str) for v in refs.values()):
        problems.append(
            f"{source}: {where}.refs: expected a table of ref name = \"actor name\", got {refs!r}"
        )
        return None
    mailbox = table.get("mailbox", DEFAULT_CAPACITY)
    if isinstance(mailbox, bool) or not isinstance(mailbox, int) or mailbox < 1:
        problems.append(f"{source}: {where}.mailbox: expected an integer >= 1, got {mailbox!r}")
        return None
    options = {k: v for k, v in table.items() if k not in RESERVED_KEYS}
    return ActorSpec(name=name, kind=kind, options=options, refs=dict(refs), mailbox=mailbox)


def _check_refs(
    spec: ActorSpec, cls: type[Actor[Any]], names: list[str], source: str, where: str
) -> list[str]:
    problems = []
    allowed = set(cls.refs_required) | set(cls.refs_optional)
    for ref_name, target in spec.refs.items():
        if not cls.refs_open and ref_name not in allowed:
            listing = ", ".join(sorted(allowed)) or "none"
            problems.append(
                f"{source}: {where}.refs.{ref_name}: unknown ref for {kind_name(spec.kind)} "
                f"(its refs: {listing})"
            )
        elif target not in names:
            close = difflib.get_close_matches(target, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"{source}: {where}.refs.{ref_name}: no actor named {target!r}{hint} "
                f"(actors: {', '.join(names)})"
            )
    for ref_name in cls.refs_required:
        if ref_name not in spec.refs:
            problems.append(
                f"{source}: {where}.refs: missing ref {ref_name!r} "
                f"({kind_name(spec.kind)} needs: {', '.join(cls.refs_required)})"
            )
    return problems


def _start_order(resolved: list[ResolvedActor]) -> list[ResolvedActor]:
    by_name = {r.spec.name: r for r in resolved}
    order: list[ResolvedActor] = []
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        if state.get(name):
            return  # done, or on the current path (a cycle, broken here)
        state[name] = "visiting"
        for target in by_name[name].spec.refs.values():
            visit(target)
        state[name] = "done"
        order.append(by_name[name])

    for item in resolved:
        visit(item.spec.name)
    return order
