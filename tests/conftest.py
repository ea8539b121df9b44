"""The rules every test here follows.

- Network tests use loopback (127.0.0.1) on free ports (the ``free_port``
  fixture) or in-memory wires (``actors.testing.memory_wire_pair``).
- Nothing sleeps to wait for something: tests wait on events, on
  ``trio.testing.wait_all_tasks_blocked()``, or on a process's output line.
- Anything time-driven (backoff, TTLs, deadlines) runs under
  ``MockClock(autojump_threshold=0)`` (the ``autojump_clock`` fixture), so
  virtual time moves as soon as every task is blocked.
- Every process a test starts is stopped by the test, even when it fails.
- Speed is measured in benchmarks/, never asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio.testing


@pytest.fixture(autouse=True)
def journal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's control planes keep their journal in the test's own
    directory (``FASTWORKER_JOURNAL``), never in the working directory's
    ``fastworker.journal``: no test sees another's tasks. A test that means
    the journal to be off sets ``FASTWORKER_JOURNAL=off`` itself."""
    path = tmp_path / "fastworker.journal"
    monkeypatch.setenv("FASTWORKER_JOURNAL", str(path))
    return path


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's per-host secret (``secret_file = "auto"``, the shipped
    default) lives under the test's own ``XDG_STATE_HOME``, never the real
    home: the control planes a test starts and its clients agree on it, and
    no test sees another's."""
    path = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    return path


@pytest.fixture
def host_secret(state_home: Path) -> bytes:
    """The per-host secret made now, as a control plane's first start makes
    it: for tests whose client starts before any control plane."""
    from actors.secret import auto_secret_path, ensure_secret_file

    return ensure_secret_file(auto_secret_path())


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """A clock that jumps to the next deadline whenever all tasks block."""
    return trio.testing.MockClock(autojump_threshold=0)
