"""The journal on a full disk, end to end: a real control plane whose journal
lives on a tiny tmpfs the test mounts (it runs as root), filled until writes
fail, then emptied again (issue 14, "Faults in the journal itself")."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from fastworker import Client
from fastworker.errors import JournalUnavailable
from tests.process.harness import env, fastworker_run  # noqa: F401 (fixture)
from tests.process.test_control import CONTROL, control_env  # noqa: F401 (fixture)

TASKS = "examples.tasks,tests.process.disk_tasks"
CHECKSUM = "examples.tasks.checksum"
BLOB = 64 * 1024  # a submission's payload: every accepted one is a row of this size
REFUSED_MORE = 30  # submissions refused after the first, for the log's rate limit


@contextmanager
def tiny_tmpfs(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory``, unmounted on the way out."""
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(directory)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root (uid {os.getuid()}): "
                    f"mount said {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; return its size."""
    chunk = b"\0" * 4096
    written = 0
    with path.open("wb", buffering=0) as filler:
        while True:
            try:
                written += filler.write(chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                return written


async def test_a_full_disk_refuses_new_tasks_keeps_results_and_recovers(
    control_env: dict[str, str], tmp_path: Path,  # noqa: F811
) -> None:
    """Journal on a 2 MB tmpfs: tasks run; the disk fills, new submissions are
    refused with JournalUnavailable (never acknowledged), a stored result is
    still served, the log says so a few times, not once per task; the filler
    goes, submissions are accepted and run again; a clean stop, a sound file."""
    with tiny_tmpfs(tmp_path / "disk") as disk:
        journal = disk / "fastworker.journal"
        filler = disk / "filler"
        marker = tmp_path / "go-on"  # on the test's disk, not the full one
        environ = {**control_env, "FASTWORKER_TASKS": TASKS, "FASTWORKER_JOURNAL": str(journal)}
        address = environ["FASTWORKER_ADDRESS"]
        async with fastworker_run(CONTROL, environ) as node:
            await node.wait_for("node control ready")
            async with Client(address, request_timeout=5) as client:
                with trio.fail_after(10):
                    for n in range(5):
                        assert await client.submit("examples.tasks.add", n, 1) == n + 1
                    old_id = await client.send("examples.tasks.add", (20, 22))
                    assert await client.result(old_id) == 42
                    # Running across the outage, until the test lets it end.
                    running_id = await client.send("tests.disk.wait_for", (str(marker),))

                # The disk fills up. Submissions go on until the journal needs
                # room it cannot get (its write-ahead log may still have some).
                fill(filler)
                refusal: JournalUnavailable | None = None
                accepted_while_full: list[str] = []
                with trio.fail_after(20):
                    for _ in range(200):
                        try:
                            accepted_while_full.append(
                                await client.send(CHECKSUM, (os.urandom(BLOB),)))
                        except JournalUnavailable as error:
                            refusal = error
                            break
                assert refusal is not None, (
                    f"200 submissions of {BLOB} bytes on a full 2 MB disk were all accepted")
                message = str(refusal)
                assert "disk is full" in message and str(journal) in message, message

                with trio.fail_after(10):
                    # Still refused, and not one of these is acknowledged.
                    for _ in range(REFUSED_MORE):
                        with pytest.raises(JournalUnavailable, match="disk is full"):
                            await client.send(CHECKSUM, (os.urandom(BLOB),))
                    # A result stored before is still served; a task that was
                    # running ends and its result is served (the journal
                    # cannot keep it), as do those acknowledged before the
                    # disk refused.
                    assert await client.result(old_id) == 42
                    marker.touch()
                    assert await client.result(running_id) == "done"
                    for task_id in accepted_while_full:
                        assert len(await client.result(task_id)) == 64

                # Room again: the journal recovers by itself, with the next write.
                filler.unlink()
                with trio.fail_after(10):
                    assert await client.submit("examples.tasks.add", 1, 2) == 3
                    again = [await client.send(CHECKSUM, (os.urandom(BLOB),)) for _ in range(3)]
                    for task_id in again:
                        assert len(await client.result(task_id)) == 64
                await node.wait_for("writing again after")
            assert await node.stop() == 0, node.tail

        # At most a few lines about the failing writes (the journal's, the
        # inbox's refusals), not one per refusal.
        failing = [line for line in node.lines if "cannot be written" in line]
        print(f"accepted {len(accepted_while_full)} on the full disk, then refused "
              f"{1 + REFUSED_MORE}; {len(failing)} log line(s) about it")
        assert 1 <= len(failing) <= 3, "\n".join(failing)
        assert not [line for line in node.lines if "Traceback" in line], node.output

        check = await trio.run_process(
            [sys.executable, "-m", "fastworker", "journal", "check", str(journal)],
            capture_stdout=True, capture_stderr=True, check=False)
        assert check.returncode == 0, (check.stdout, check.stderr)
        assert b": ok:" in check.stdout, check.stdout
