"""Every example in ``examples/`` runs as its docstring says.

Each runs as a user would start it, as a script from the repository root,
on a free loopback port, and must finish by itself; ``GUARD`` only turns a
hang into a failure (the process is terminated, then killed).
``examples/*.toml`` topologies are run by ``tests/process/test_run.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

from actors.pytest_plugin import free_tcp_ports
from tests.process.harness import fastworker_run

ROOT = Path(__file__).resolve().parents[1]
GUARD = 10  # seconds


@attrs.frozen
class Example:
    """How to run one example, and a line that shows it did its job."""

    script: str
    args: tuple[str, ...]
    expected: str
    #: Runs against a control plane (started for it on free ports).
    control_plane: bool = False


#: Every example script; ``{address}`` becomes a free loopback address.
EXAMPLES = [
    Example(
        "examples/pingpong.py",
        ("--count", "3", "--address", "{address}"),
        expected="done: 3 pongs",
    ),
    Example(
        "examples/trio_client.py",
        (),
        expected="fail('on purpose') raised ValueError on purpose",
        control_plane=True,
    ),
    Example(
        "examples/sync_client.py",
        (),
        expected="results: [1, 2, 3]",
        control_plane=True,
    ),
]

#: Example modules that are not scripts, and where they are exercised.
MODULES = {
    "examples/tasks.py": "loaded by every control plane the tests start",
    "examples/fastapi_app.py": "tests/process/test_control.py::test_the_fastapi_example",
}


def test_every_example_script_is_run() -> None:
    """Each script in examples/ has an entry in EXAMPLES."""
    scripts = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "examples").glob("*.py")
        if path.name != "__init__.py"
    }
    assert scripts == {example.script for example in EXAMPLES} | set(MODULES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.script for e in EXAMPLES])
async def test_example_runs_to_completion(
    example: Example, loopback_address: str, tmp_path: Path
) -> None:
    """The example exits 0 on its own and logs the line that shows it worked."""
    args = [arg.format(address=loopback_address) for arg in example.args]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FASTWORKER_", "PINGPONG_")) or k == "FASTWORKER_JOURNAL"}
    if example.control_plane:
        env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
        # Not the well-known ports (8080, 5550), which parallel runs would share.
        env["FASTWORKER_DASHBOARD"] = "127.0.0.1:0"
        env["FASTWORKER_DISCOVERY_PORT"] = "0"
        env["FASTWORKER_TASKS"] = "examples.tasks"  # as `make run` does
        async with fastworker_run("config/control.toml", env) as node:
            await node.wait_for("node control ready")
            await run_example(example, args, env, tmp_path)
            assert await node.stop() == 0, node.tail
    else:
        await run_example(example, args, env, tmp_path)


async def run_example(
    example: Example, args: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    log_file = tmp_path / "output.txt"

    # A file rather than a pipe keeps the output of an example that hangs.
    with log_file.open("wb") as log, trio.move_on_after(GUARD) as guard:
        result = await trio.run_process(
            [sys.executable, example.script, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    output = log_file.read_text(errors="replace")
    if guard.cancelled_caught:
        pytest.fail(f"{example.script} did not finish within {GUARD} s; it wrote:\n{output}")

    assert result.returncode == 0, output
    assert example.expected in output
    assert "Traceback" not in output
