"""The journal end to end: a real control plane killed with SIGKILL, again
and again at random moments, and started again on the same journal. A
crash-loop checker counts per task what was lost, run twice or run
without being accepted."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

import trio

from actors.pytest_plugin import free_tcp_ports
from fastworker import Client
from tests.process.harness import env, fastworker_run, run_to_exit, text_lines  # noqa: F401 (fixture)
from tests.process.test_control import CONTROL, control_env  # noqa: F401 (fixture)

TASKS = "examples.tasks,tests.process.journal_tasks"


async def test_kill_9_in_a_loop_loses_no_accepted_task(
    control_env: dict[str, str], tmp_path: Path,  # noqa: F811
) -> None:
    """Ten SIGKILLs at random moments (while tasks are accepted, queued,
    running, committed): every accepted task ends, each exactly once unless
    it was running at a kill, and nothing runs that was never submitted."""
    journal = tmp_path / "fastworker.journal"
    runs = tmp_path / "runs.log"
    environ = {**control_env, "FASTWORKER_TASKS": TASKS, "FASTWORKER_JOURNAL": str(journal),
               "FASTWORKER_CONCURRENCY": "8"}
    address = environ["FASTWORKER_ADDRESS"]
    rng = random.Random(14)
    accepted: dict[str, str] = {}  # label -> task id
    submitted: set[str] = set()
    for round_ in range(10):
        async with fastworker_run(CONTROL, environ) as node:
            await node.wait_for("node control ready")
            async with Client(address, request_timeout=2) as client:
                kill_after = rng.randrange(20, 200)
                with trio.move_on_after(10):
                    for n in range(400):
                        label = f"r{round_}-{n}"
                        submitted.add(label)
                        try:
                            accepted[label] = await client.send(
                                "tests.journal.record", (label, str(runs)))
                        except Exception:
                            break
                        if n == kill_after:
                            node.process.kill()
            await node.process.wait()
    # One last start: every accepted task must now end.
    async with fastworker_run(CONTROL, environ) as node:
        await node.wait_for("node control ready")
        async with Client(address) as client:
            with trio.fail_after(60):
                results = await client.results(list(accepted.values()))
        assert await node.stop() == 0, node.tail
    assert sorted(results) == sorted(accepted)
    # The journal the kills left behind is sound to SQLite's own check.
    check = await trio.run_process(
        [sys.executable, "-m", "fastworker", "journal", "check", str(journal)],
        capture_stdout=True, capture_stderr=True, check=False)
    assert check.returncode == 0, (check.stdout, check.stderr)
    ran = Counter(runs.read_text().split())
    lost = [label for label in accepted if ran[label] == 0]
    unexpected = [label for label in ran if label not in submitted]
    twice = [label for label, count in ran.items() if count > 1]
    print(f"accepted {len(accepted)} of {len(submitted)} submitted; ran {sum(ran.values())} "
          f"times; lost {len(lost)}, unexpected {len(unexpected)}, twice {len(twice)}")
    assert (lost, unexpected) == ([], [])
    # A task runs twice only if it was running when the control plane died:
    # at most the executor's slots per kill.
    assert len(twice) <= 10 * 8, twice


async def test_a_damaged_journal_stops_the_control_plane_with_one_line(
    control_env: dict[str, str], tmp_path: Path,  # noqa: F811
) -> None:
    """``fastworker run`` on a damaged journal exits 1 with one line naming
    the file, what is wrong and the salvage command; the file is unchanged."""
    journal = tmp_path / "fastworker.journal"
    garbage = b"this is not a journal" * 100
    journal.write_bytes(garbage)
    done = await run_to_exit(CONTROL, env={**control_env, "FASTWORKER_JOURNAL": str(journal)})
    assert done.returncode == 1
    errors = [line for line in text_lines(done.stderr) if "journal" in line]
    assert len(errors) == 1, text_lines(done.stderr)
    assert str(journal) in errors[0] and "fastworker journal salvage" in errors[0]
    assert "not an SQLite database" in errors[0]
    assert journal.read_bytes() == garbage


async def test_a_second_control_plane_on_the_same_journal_refuses_to_start(
    control_env: dict[str, str], tmp_path: Path,  # noqa: F811
) -> None:
    """A second control plane on a journal in use exits 1 naming the file and
    the process that holds it; the first goes on serving."""
    journal = tmp_path / "fastworker.journal"
    environ = {**control_env, "FASTWORKER_JOURNAL": str(journal)}
    async with fastworker_run(CONTROL, environ) as first:
        await first.wait_for("node control ready")
        other = {**environ, "FASTWORKER_ADDRESS": f"tcp://127.0.0.1:{free_tcp_ports(6)}"}
        done = await run_to_exit(CONTROL, env=other)
        assert done.returncode == 1
        stderr = "\n".join(text_lines(done.stderr))
        assert f"is in use by process {first.process.pid}" in stderr, stderr
        async with Client(environ["FASTWORKER_ADDRESS"]) as client:
            assert await client.submit("examples.tasks.add", 1, 2) == 3
        assert await first.stop() == 0, first.tail
