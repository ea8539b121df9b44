"""The examples of docs/tasks.md marked ``python run`` run as the page
says: each is a script, run in its own process against a control plane
with one async slot."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import trio

from tests.dashboard.harness import open_control

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "tasks.md"
BLOCK = re.compile(r"^```python run\n(.*?)^```", re.S | re.M)
EXAMPLES = BLOCK.findall(PAGE.read_text())


def test_the_page_has_runnable_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example{n}" for n in range(len(EXAMPLES))])
async def test_a_docs_example_runs(source: str) -> None:
    async with open_control(environ={"FASTWORKER_CONCURRENCY": "1"}) as control:
        env = {**os.environ, "FASTWORKER_ADDRESS": control.address, "PYTHONPATH": str(ROOT),
               "FASTWORKER_DASHBOARD": control.url.removeprefix("http://")}
        with trio.fail_after(60):
            done = await trio.run_process([sys.executable, "-c", source], env=env,
                                          capture_stdout=True, capture_stderr=True,
                                          check=False)
    output = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    # Every "# value" comment on a print line is what that line prints.
    expected = [line.split("# ")[1].split(",")[0].strip()
                for line in source.splitlines() if "print(" in line and "#" in line]
    printed = output.splitlines()
    for want in expected:
        assert any(line.startswith(want) for line in printed), (want, output)
