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

ROOT = Path(__file__).resolve().parents[1]
GUARD = 10  # seconds


@attrs.frozen
class Example:
    """How to run one example, and a line that shows it did its job."""

    script: str
    args: tuple[str, ...]
    expected: str


#: Every example script; ``{address}`` becomes a free loopback address.
EXAMPLES = [
    Example(
        "examples/pingpong.py",
        ("--count", "3", "--address", "{address}"),
        expected="done: 3 pongs",
    ),
]


def test_every_example_script_is_run() -> None:
    """Each script in examples/ has an entry in EXAMPLES."""
    scripts = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "examples").glob("*.py")
        if path.name != "__init__.py"
    }
    assert scripts == {example.script for example in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.script for e in EXAMPLES])
async def test_example_runs_to_completion(
    example: Example, loopback_address: str, tmp_path: Path
) -> None:
    """The example exits 0 on its own and logs the line that shows it worked."""
    args = [arg.format(address=loopback_address) for arg in example.args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTWORKER_", "PINGPONG_"))}
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
