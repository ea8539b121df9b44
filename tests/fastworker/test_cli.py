"""fastworker.cli, in process: what ``fastworker run`` sets up before the
node starts (the process tests in tests/process/test_run.py run it for real)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
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
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)  # the test's own logging stays
    assert cli.main(["run", "examples/pingpong.toml"]) == 0
    assert seen == [(cli.GC_YOUNG_THRESHOLD, 10, 10)]


def test_check_leaves_the_collector_alone(collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    assert cli.main(["run", "--check", "examples/pingpong.toml"]) == 0
    assert gc.get_threshold() == (700, 10, 10)
