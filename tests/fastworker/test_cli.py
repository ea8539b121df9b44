"""fastworker.cli, in process: what ``fastworker run`` sets up before the
node starts (the process tests in tests/process/test_run.py run it for real)."""

from __future__ import annotations

import gc
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastworker import cli


@pytest.fixture
def collector() -> Iterator[None]:
    """Put the collector's thresholds back as they were."""
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_tune_gc_raises_only_the_young_threshold(collector: None) -> None:
    gc.set_threshold(700, 11, 12)
    cli.tune_gc()
    assert gc.get_threshold() == (cli.GC_YOUNG_THRESHOLD, 11, 12)


def test_run_tunes_the_collector_before_the_node_starts(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node runs with the raised threshold: it is set before trio starts."""
    gc.set_threshold(700, 10, 10)
    seen: list[tuple[int, int, int]] = []

    def run(*args: Any) -> int:
        seen.append(gc.get_threshold())
        return 0

    monkeypatch.setattr(cli.trio, "run", run)
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)  # the test's own logging stays
    assert cli.main(["run", "examples/pingpong.toml"]) == 0
    assert seen == [(cli.GC_YOUNG_THRESHOLD, 10, 10)]


def test_check_leaves_the_collector_alone(collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    assert cli.main(["run", "--check", "examples/pingpong.toml"]) == 0
    assert gc.get_threshold() == (700, 10, 10)


def test_secret_makes_the_per_host_secret_and_prints_only_its_path(
    state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fastworker secret`` makes the file (0600) once and prints where it
    is, never what it holds; a second run keeps the same secret."""
    path = state_home / "fastworker" / "secret"
    assert cli.main(["secret"]) == 0
    secret = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli.main(["secret"]) == 0
    assert path.read_text() == secret
    out, err = capsys.readouterr()
    assert (out, err) == (f"{path}\n{path}\n", "")


def test_secret_refuses_a_file_open_to_others(
    state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = state_home / "fastworker" / "secret"
    assert cli.main(["secret"]) == 0
    path.chmod(0o640)
    capsys.readouterr()
    assert cli.main(["secret"]) == 1
    assert capsys.readouterr() == ("", (
        f"the per-host secret {path} is open to other users (mode 0640); "
        f"run chmod 600 {path}, or remove it to have a new one made\n"))


class TestShippedNames:
    """``fastworker run control|sub`` finds the shipped topologies by name,
    whatever the working directory holds; anything else is a path."""

    def test_a_bare_name_is_the_shipped_topology_even_beside_a_same_named_entry(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "control").mkdir()
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("FASTWORKER_TASKS", "")
        assert cli.main(["run", "control", "--check"]) == 0
        assert capsys.readouterr().out.startswith("control: ok (")
        assert cli.shipped_path("control").is_file()

    def test_a_name_that_is_no_file_says_which_names_ship(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.chdir(tmp_path)
        assert cli.main(["run", "contrl", "--check"]) == 2
        assert capsys.readouterr().err.strip() == (
            "contrl: no such topology file; the shipped topologies are control and sub "
            "(fastworker run control), anything else is a path")

    def test_a_bad_log_format_is_a_usage_error(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            cli.main(["run", "control", "--log-format", "xml"])
        assert exited.value.code == 2
        assert "log format must be text or json" in capsys.readouterr().err
