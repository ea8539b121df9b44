"""Running ``fastworker run`` as a user does, for tests: real processes on
free loopback ports, read line by line, always killed and reaped.

Every wait is on the process, for a line it writes or for its exit; ``GUARD``
only turns a hang into a failure that shows what the process wrote.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from actors.pytest_plugin import free_tcp_ports

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = "tests/process/topologies"
PINGPONG = "examples/pingpong.toml"
PING_SIDE = f"{TOPOLOGIES}/ping_side.toml"
PONG_SIDE = f"{TOPOLOGIES}/pong_side.toml"
LISTENER = f"{TOPOLOGIES}/listener.toml"
STUCK = f"{TOPOLOGIES}/stuck.toml"
GUARD = 10  # seconds; a hang fails the test instead of stalling the run
#: The same for one command against a control plane (a bulk one may take a while).
COMMAND_GUARD = 60

# "2026-12-06T07:21:00.125+00:00 INFO    actors.node: node pingpong ready with 4 actors"
_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "
    r"(?P<level>[A-Z]+) +(?P<logger>\S+): (?P<message>.*)$")


@pytest.fixture
def env() -> dict[str, str]:
    """The environment of a child: ours, without settings a test makes itself."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FASTWORKER_", "PINGPONG_")) or key == "FASTWORKER_JOURNAL"
    }
    environ["PYTHONUNBUFFERED"] = "1"
    # No discovery beacon unless a test asks for one: parallel control planes
    # would contend for the one well-known UDP port.
    environ["FASTWORKER_DISCOVERY_PORT"] = "0"
    # Nor a dashboard on the well-known port 8080.
    environ["FASTWORKER_DASHBOARD"] = "off"
    # The shipped topologies import no task module unless told; the
    # examples' unless a test names its own.
    environ["FASTWORKER_TASKS"] = "examples.tasks"
    # The per-host secret is the test's own (tests/conftest.py's state_home),
    # shared by the nodes it starts and its clients.
    environ["XDG_STATE_HOME"] = os.environ["XDG_STATE_HOME"]
    return environ


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastworker", "run", *args]


def log_messages(lines: list[str], logger: str) -> list[str]:
    """The messages of the log records ``logger`` wrote, in order."""
    found = []
    for line in lines:
        record = _RECORD.match(line)
        if record and record["logger"] == logger:
            found.append(record["message"])
    return found


class Lines:
    """A child process's output (stdout, with stderr merged into it), line by line."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        self._stdout = process.stdout
        self._pending = b""
        #: Every line read so far.
        self.read: list[str] = []

    async def next(self) -> str | None:
        """The next line, or ``None`` at the end of the output."""
        while b"\n" not in self._pending:
            chunk = await self._stdout.receive_some()
            if not chunk:
                if not self._pending:
                    return None
                self._pending += b"\n"
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        text = line.decode(errors="replace")
        self.read.append(text)
        return text


class Running:
    """A running ``fastworker run``, read line by line (stdout and stderr merged)."""

    def __init__(self, process: trio.Process, file: str) -> None:
        self.process = process
        self.file = file
        self._lines = Lines(process)
        #: Every line read so far.
        self.lines = self._lines.read

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def tail(self) -> str:
        """The last lines read, for a failure message."""
        return "\n".join(self.lines[-40:])

    async def _read_line(self) -> str | None:
        """The next line, or ``None`` at the end of the output."""
        return await self._lines.next()

    async def wait_for(self, text: str) -> str:
        """Read on until a line containing ``text``, and return that line."""
        with trio.move_on_after(GUARD):
            while (line := await self._read_line()) is not None:
                if text in line:
                    return line
            pytest.fail(f"{self.file} ended before writing {text!r}; it wrote:\n{self.tail}")
        pytest.fail(f"{self.file} wrote no {text!r} within {GUARD} s; it ended with:\n{self.tail}")

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self) -> int:
        """Read the rest of the output, wait for the exit, return its code."""
        with trio.move_on_after(GUARD):
            while await self._read_line() is not None:
                pass
            return await self.process.wait()
        pytest.fail(f"{self.file} did not exit within {GUARD} s; it ended with:\n{self.tail}")

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the exit; return its code."""
        self.send_signal(signum)
        return await self.wait_exit()


@asynccontextmanager
async def fastworker_run(file: str, env: dict[str, str]) -> AsyncIterator[Running]:
    """Start ``fastworker run FILE``; kill and reap it on the way out."""
    async with run_process(command(file), env, file) as running:
        yield running


@asynccontextmanager
async def control_plane(env: dict[str, str],
                        file: str = "config/control.toml") -> AsyncIterator[Running]:
    """A control plane, ready; on the way out stopped with SIGTERM (exit 0
    asserted), or killed if the test failed."""
    async with fastworker_run(file, env) as node:
        await node.wait_for("node control ready")
        yield node
        assert await node.stop() == 0, node.tail


@asynccontextmanager
async def run_process(args: list[str], env: dict[str, str], label: str,
                      cwd: Path = ROOT) -> AsyncIterator[Running]:
    """Start ``args`` in ``cwd`` (output read as ``label``); kill and reap
    it on the way out."""
    process = await trio.lowlevel.open_process(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield Running(process, label)
    finally:
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                process.kill()
            await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


async def run_to_exit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``fastworker run ARGS`` to its end (terminated if it outlives ``GUARD``)."""
    with trio.fail_after(GUARD):
        return await trio.run_process(
            command(*args),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def text_lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the control plane on six free loopback ports."""
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    return env


async def fastworker_command(environ: dict[str, str],
                             *args: str) -> subprocess.CompletedProcess[bytes]:
    """``fastworker ARGS`` (a command that talks to a control plane) run to
    its end, its output captured."""
    with trio.fail_after(COMMAND_GUARD):
        return await trio.run_process([sys.executable, "-m", "fastworker", *args], cwd=ROOT,
                                      env=environ, capture_stdout=True, capture_stderr=True,
                                      check=False)
