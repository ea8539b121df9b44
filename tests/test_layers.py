"""The public surface is explicit, and imports only go down the layers.

``actors`` → ``fastworker`` → ``dashboard``: ``actors`` imports neither of
the others and ``fastworker`` does not import ``dashboard``. Every import
statement counts, wherever it is (inside a function, under
``TYPE_CHECKING``), and relative imports are resolved first.

A module's ``__all__`` is sorted, names only what exists, and lists every
public class and function the module defines or re-exports (``X as X``).
A package's ``__init__`` lists exactly those.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "fastworker", "dashboard")
#: Which packages each package must not import.
FORBIDDEN = {"actors": {"fastworker", "dashboard"}, "fastworker": {"dashboard"}}


@attrs.frozen
class Source:
    """One module of ours: its name, file and syntax tree."""

    module: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def package(self) -> str:
        """What a relative import in this module is relative to."""
        return self.module if self.is_package else self.module.rpartition(".")[0]


def _sources() -> list[Source]:
    sources = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            sources.append(Source(".".join(parts), path, tree))
    return sources


SOURCES = _sources()


def imported_modules(source: Source) -> list[tuple[int, str]]:
    """Every module an import statement of ``source`` names, with its line."""
    found = []
    for node in ast.walk(source.tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = source.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from . import x` may name a submodule.
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def declared_all(source: Source) -> list[str] | None:
    """The literal ``__all__`` of a module, or ``None`` if it has none."""
    for node in source.tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert node.value is not None
            value = ast.literal_eval(node.value)
            assert isinstance(value, (list, tuple)), f"{source.module}.__all__ is not a list"
            return list(value)
    return None


def public_names(source: Source) -> set[str]:
    """The public classes and functions a module defines at its top level,
    and the names it re-exports with ``import x as x``."""
    names = set()
    for node in source.tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(
                alias.asname
                for alias in node.names
                if alias.asname is not None and alias.asname == alias.name.rpartition(".")[2]
            )
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize(
    "source",
    [s for s in SOURCES if s.module.partition(".")[0] in FORBIDDEN],
    ids=lambda s: s.module,
)
def test_imports_only_go_down_the_layers(source: Source) -> None:
    """actors imports nothing of fastworker or dashboard; fastworker imports
    nothing of dashboard."""
    forbidden = FORBIDDEN[source.module.partition(".")[0]]
    upward = [
        f"{source.path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in imported_modules(source)
        if module.partition(".")[0] in forbidden
    ]
    assert upward == []


EXPORTING = [s for s in SOURCES if s.is_package or declared_all(s) is not None]


@pytest.mark.parametrize("source", EXPORTING, ids=lambda s: s.module)
class TestExports:
    def test_all_is_sorted_without_duplicates(self, source: Source) -> None:
        """__all__ is in sorted order and names each thing once."""
        exported = declared_all(source) or []
        assert exported == sorted(set(exported))

    def test_all_names_only_what_exists(self, source: Source) -> None:
        """Every name in __all__ is an attribute of the imported module."""
        module = importlib.import_module(source.module)
        exported = getattr(module, "__all__", [])
        assert [name for name in exported if not hasattr(module, name)] == []

    def test_all_lists_every_public_class_and_function(self, source: Source) -> None:
        """Every public class and function a module defines or re-exports is in
        __all__; a package's __all__ holds exactly its re-exports."""
        exported = set(declared_all(source) or [])
        public = public_names(source)
        assert sorted(public - exported) == []
        if source.is_package:
            assert sorted(exported - public) == []


def _defines_actor(source: Source) -> bool:
    """Whether a module defines an actor class (a subclass of ``Actor``)."""
    for node in source.tree.body:
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                target = base.value if isinstance(base, ast.Subscript) else base
                if isinstance(target, ast.Name) and target.id == "Actor":
                    return True
    return False


def actor_unit(module: str) -> str:
    """The actor a module of ``fastworker`` belongs to: its package's name
    below ``fastworker`` (``fastworker.inbox.levels`` -> ``fastworker.inbox``)."""
    return ".".join(module.split(".")[:2])


#: The actors of fastworker, by unit: each a module, or a package of modules.
ACTOR_UNITS = sorted({
    actor_unit(s.module) for s in SOURCES
    if s.module.startswith("fastworker.") and _defines_actor(s)
})


@pytest.mark.parametrize(
    "source",
    [s for s in SOURCES if s.module.startswith("fastworker.") and actor_unit(s.module) in ACTOR_UNITS],
    ids=lambda s: s.module,
)
def test_no_actor_imports_another_actor(source: Source) -> None:
    """An actor's modules import no other actor's modules: actors share only
    messages, internal messages, stats, errors and helpers, and reach each
    other through refs."""
    own = actor_unit(source.module)
    crossing = [
        f"{source.path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in imported_modules(source)
        if module.startswith("fastworker.") and actor_unit(module) in ACTOR_UNITS
        and actor_unit(module) != own
    ]
    assert crossing == []


def test_the_actor_rule_sees_every_actor() -> None:
    """The rule above knows the actors of the shipped topologies (so a rename
    cannot turn it off unnoticed)."""
    assert {"fastworker.inbox", "fastworker.dispatcher", "fastworker.results",
            "fastworker.executor", "fastworker.registry", "fastworker.link",
            "fastworker.periodic"} <= set(ACTOR_UNITS)
