"""Topologies and config: TOML and Python compositions, kinds, wiring, and
one readable line per config problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors import Actor, ConfigError, RestartPolicy, Topology, WiringError, register_kind
from actors.topology import known_kinds
from tests.actors.helpers import Recorder, RecorderOptions

REC = "tests.actors.helpers:Recorder"
KINDS = ", ".join(known_kinds())


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        Topology.from_toml(path).resolve()
    return [line.replace(str(path), "t.toml") for line in raised.value.problems]


def test_a_toml_topology_resolves_with_options_refs_and_node_settings(tmp_path: Path) -> None:
    """Every part of the TOML format lands where it belongs."""
    path = tmp_path / "t.toml"
    path.write_text(
        f"""
        [node]
        name = "demo"
        shutdown_deadline = 3.5
        [node.supervision]
        strategy = "rest_for_one"
        max_restarts = 2
        within = 9.0

        [actors.front]
        kind = "{REC}"
        refs = {{ out = "back" }}
        mailbox = 16
        label = "front"

        [actors.back]
        kind = "{REC}"
        """
    )
    topology = Topology.from_toml(path)
    resolved = topology.resolve()
    assert topology.name == "demo"
    assert topology.node.shutdown_deadline == 3.5
    assert topology.node.supervision == RestartPolicy(
        strategy="rest_for_one", max_restarts=2, within=9.0
    )
    # What an actor refers to starts before it.
    assert [r.spec.name for r in resolved] == ["back", "front"]
    front = resolved[1]
    assert front.cls is Recorder
    assert front.options == RecorderOptions(label="front")
    assert front.spec.refs == {"out": "back"}
    assert front.spec.mailbox == 16


def test_a_python_topology_resolves_like_a_toml_one() -> None:
    """Topology.add takes the same kinds, options and refs as a TOML table."""
    topology = Topology(name="demo").add("back", REC).add("front", Recorder, refs={"out": "back"},
                                                          limit=3)
    resolved = topology.resolve()
    assert [r.spec.name for r in resolved] == ["back", "front"]
    assert resolved[1].options == RecorderOptions(limit=3)


def test_a_cycle_is_broken_at_its_first_written_actor() -> None:
    """Of two actors that refer to each other, the first written starts last."""
    topology = Topology().add("a", Recorder, refs={"out": "b"}).add("b", Recorder, refs={"out": "a"})
    assert [r.spec.name for r in topology.resolve()] == ["b", "a"]


def test_registered_kind_names_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    """register_kind gives a class a short name for topologies."""

    class Local(Actor[Any]):
        pass

    monkeypatch.setattr("actors.topology._registered", {})
    register_kind("tests.Local", Local)
    assert Topology().add("x", "tests.Local").resolve()[0].cls is Local


def test_environment_references_fill_values_and_defaults() -> None:
    """${NAME} takes the environment's value, ${NAME:-default} the default when unset;
    a whole-value reference fills a number field from its text."""
    data = {"actors": {"a": {"kind": REC, "label": "${LABEL}", "limit": "${LIMIT:-7}"}}}
    topology = Topology.from_mapping(data, source="t.toml", environ={"LABEL": "from-env"})
    assert topology.resolve()[0].options == RecorderOptions(label="from-env", limit=7)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        pytest.param(
            "[actors.a\nkind = 1",
            "t.toml: invalid TOML: Expected ']' at the end of a table declaration (at line 1, "
            "column 10)",
            id="toml_syntax",
        ),
        pytest.param(
            '[actors.a]\nkind = "actors.Edgee"',
            "t.toml: $.actors.a.kind: unknown kind 'actors.Edgee'; did you mean 'actors.Edge'? "
            f"known kinds: {KINDS} (a kind is a registered short name or 'package.module:Class')",
            id="unknown_kind",
        ),
        pytest.param(
            '[actors.a]\nkind = "tests.actors.helpers:Nope"',
            "t.toml: $.actors.a.kind: module 'tests.actors.helpers' has no 'Nope'",
            id="unknown_class",
        ),
        pytest.param(
            '[actors.a]\nkind = "no_such_module:X"',
            "t.toml: $.actors.a.kind: cannot import module 'no_such_module': "
            "ModuleNotFoundError: No module named 'no_such_module'",
            id="unknown_module",
        ),
        pytest.param(
            '[actors.a]\nlimit = 3',
            "t.toml: $.actors.a.kind: expected a kind name or 'package.module:Class', got nothing",
            id="missing_kind",
        ),
        pytest.param(
            f'[actors.a]\nkind = "{REC}"\nlable = "x"',
            "t.toml: $.actors.a: unknown option 'lable' (did you mean 'label'?); "
            "known options: label, limit",
            id="unknown_option",
        ),
        pytest.param(
            f'[actors.a]\nkind = "{REC}"\nlimit = "many"',
            "t.toml: $.actors.a.limit: expected an integer, got 'many'",
            id="wrong_type",
        ),
        pytest.param(
            f'[actors.a]\nkind = "{REC}"\nlimit = 1.5',
            "t.toml: $.actors.a.limit: expected an integer, got 1.5",
            id="float_for_int",
        ),
        pytest.param(
            '[actors.e]\nkind = "actors.Edge"\naddress = "tcp://127.0.0.1:1"',
            "t.toml: $.actors.e.codec: required option missing",
            id="missing_option",
        ),
        pytest.param(
            '[actors.e]\nkind = "actors.Edge"\ncodec = "tests.actors.helpers:codec"\n'
            'mode = "listne"',
            "t.toml: $.actors.e.mode: expected one of 'listen', 'dial', got 'listne'",
            id="not_one_of",
        ),
        pytest.param(
            '[actors.e]\nkind = "actors.Edge"\ncodec = "tests.actors.helpers:nothing"',
            "t.toml: $.actors.e: codec: 'tests.actors.helpers:nothing' is not an "
            "actors.codec.Codec (got None)",
            id="bad_codec",
        ),
        pytest.param(
            f'[actors.a]\nkind = "{REC}"\nrefs = {{ out = "bb" }}\n[actors.b]\nkind = "{REC}"',
            "t.toml: $.actors.a.refs.out: no actor named 'bb'; did you mean 'b'? (actors: a, b)",
            id="ref_to_missing_actor",
        ),
        pytest.param(
            f'[actors.a]\nkind = "{REC}"\nrefs = {{ outt = "a" }}',
            "t.toml: $.actors.a.refs.outt: unknown ref for tests.actors.helpers:Recorder "
            "(its refs: out)",
            id="unknown_ref",
        ),
        pytest.param(
            '[actors.p]\nkind = "examples.pingpong:Pinger"',
            "t.toml: $.actors.p.refs: missing ref 'peer' (examples.pingpong:Pinger needs: peer)",
            id="missing_ref",
        ),
        pytest.param(
            f'[actors.a]\nkind = "{REC}"\nmailbox = 0',
            "t.toml: $.actors.a.mailbox: expected an integer >= 1, got 0",
            id="bad_mailbox",
        ),
        pytest.param(
            f'[actors.a]\nkind = "{REC}"\nlabel = "${{FASTWORKER_TEST_UNSET}}"',
            "t.toml: $.actors.a.label: environment variable FASTWORKER_TEST_UNSET is not set "
            "and has no default (write ${FASTWORKER_TEST_UNSET:-default} to give one)",
            id="unset_env",
        ),
        pytest.param(
            f'[nodes]\n[actors.a]\nkind = "{REC}"',
            "t.toml: $.nodes: unknown section (known: node, actors)",
            id="unknown_section",
        ),
        pytest.param(
            "[node]\nname = 'x'",
            "t.toml: $.actors: expected at least one [actors.NAME] table",
            id="no_actors",
        ),
        pytest.param(
            f'[node.supervision]\nstrategy = "one_for_none"\n[actors.a]\nkind = "{REC}"',
            "t.toml: $.node.supervision.strategy: expected one of 'one_for_one', "
            "'one_for_all', 'rest_for_one', got 'one_for_none'",
            id="bad_strategy",
        ),
    ],
)
def test_each_config_problem_is_one_readable_line(
    tmp_path: Path, toml: str, expected: str
) -> None:
    """A config problem names the file, the key, what was expected and what was found."""
    assert problems_of(tmp_path, toml) == [expected]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """All problems of a file come in one error, in file order."""
    assert problems_of(
        tmp_path,
        f'[actors.a]\nkind = "{REC}"\nlimit = "x"\n[actors.b]\nkind = "nope"\n'
        f'[actors.c]\nkind = "{REC}"\nrefs = {{ out = "zz" }}',
    ) == [
        "t.toml: $.actors.a.limit: expected an integer, got 'x'",
        f"t.toml: $.actors.b.kind: unknown kind 'nope'; known kinds: {KINDS} (a kind is a "
        "registered short name or 'package.module:Class')",
        "t.toml: $.actors.c.refs.out: no actor named 'zz' (actors: a, b, c)",
    ]


def test_wiring_problems_alone_raise_wiring_error() -> None:
    """When only the wiring is wrong the error is a WiringError."""
    with pytest.raises(WiringError):
        Topology().add("a", Recorder, refs={"out": "missing"}).resolve()


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    """A missing topology file is reported as such."""
    with pytest.raises(ConfigError) as raised:
        Topology.from_toml(tmp_path / "nope.toml")
    assert str(raised.value) == f"{tmp_path / 'nope.toml'}: no such file"
