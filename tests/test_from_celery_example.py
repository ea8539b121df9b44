"""``examples/from_celery``, the fastworker half of docs/from-celery.md,
does what the page says: its app, run against a real control plane with
its tasks, prints what each ``print`` line's comment says; and every block
of the page that names one of its files is that file's code, unchanged."""

from __future__ import annotations

import re
import sys

import trio

from actors.pytest_plugin import free_tcp_ports
from tests.process.harness import ROOT, control_plane, env  # noqa: F401 (fixture)

EXAMPLE = ROOT / "examples" / "from_celery"
PAGE = ROOT / "docs" / "from-celery.md"
#: A ``print`` line's trailing comment: what that line prints.
PRINTS = re.compile(r"^ *print\(.*\)  # (.*)$", re.MULTILINE)
#: A block of the page taken from a file (```` ```python examples/from_celery/app.py ````).
BLOCK = re.compile(r"^```python (examples/from_celery/\S+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


async def test_the_app_prints_what_its_comments_say(env: dict[str, str]) -> None:  # noqa: F811
    """The app runs to its end against a control plane alone, printing the
    line each comment gives, and the periodic task is on the schedule."""
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_TASKS"] = "examples.from_celery.tasks"
    async with control_plane(env) as node:
        assert "examples.from_celery.tasks.purge_sessions cron '*/5 * * * *'" in node.output
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "examples.from_celery.app"], cwd=ROOT, env=env,
                capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    expected = PRINTS.findall((EXAMPLE / "app.py").read_text())
    assert len(expected) == 7
    assert done.stdout.decode().splitlines() == expected


def test_the_page_shows_the_example_unchanged() -> None:
    """Each block of docs/from-celery.md marked with a file of the example
    is a run of whole lines of that file, as it is."""
    blocks = BLOCK.findall(PAGE.read_text())
    assert {path for path, _ in blocks} == {
        "examples/from_celery/tasks.py", "examples/from_celery/app.py"}
    for path, code in blocks:
        assert "\n" + code in "\n" + (ROOT / path).read_text(), path
