"""How long a whole control plane takes to come back with 100,000 queued
tasks in its journal (issue 14's figure).

    .venv/bin/python benchmarks/recovery.py [--tasks 100000] [--runs 5]

The journal is built the way a crash leaves it: a real ``fastworker run
config/control.toml`` (executor of one slot, held by an hour-long
``examples.tasks.nap``) accepts no-op tasks from a client (``delay_many``;
each accepted only once its row is committed), which stay queued, and is
killed with SIGKILL. ``--tasks`` tasks in all: the nap (brought back as
dispatched) and the no-ops (queued). Not one more: the store's
``max_entries`` (100,000 in control.toml) counts live records too, and past
it a result is evicted as soon as it is final. The file, its write-ahead
log and its index are what the inbox wrote, as it wrote them: nothing
checkpointed or closed cleanly, so a start reads the log too.

Each timed run copies those three files to a fresh path and starts
``fastworker run config/control.toml`` on it (as shipped: 256 slots),
timing from just before the process is spawned to the start-up lines of
the journal, the store and the inbox, to ``node control ready``, and to
the first queued task's result in the hands of a client that connects at
ready. A run on an empty journal is the baseline: starting Python and the
node costs that much with nothing to recover. Prints medians over the
runs, the journal's size and the control plane's memory once ready (these
machines are shared and noisy: read them as orders of magnitude).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from fastworker import Client  # noqa: E402

CONTROL = "config/control.toml"
NOOP = "examples.noop"
SUFFIXES = ("", "-wal", "-shm")


def environment(journal: Path, **settings: str) -> dict[str, str]:
    return {**os.environ, "FASTWORKER_ADDRESS": f"tcp://127.0.0.1:{free_tcp_ports(6)}",
            "FASTWORKER_JOURNAL": str(journal), "FASTWORKER_DISCOVERY_PORT": "0",
            "FASTWORKER_DASHBOARD": "off", "FASTWORKER_SCHEDULER": "false",
            "PYTHONUNBUFFERED": "1", "FASTWORKER_TASKS": "examples.tasks", **settings}


class Node:
    """A ``fastworker run`` whose output is read line by line, each line
    with the time it was read."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._pending = b""

    @classmethod
    async def start(cls, env: dict[str, str]) -> Node:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "fastworker", "run", CONTROL], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return cls(process)

    async def wait_for(self, text: str) -> tuple[str, float]:
        """The next line containing ``text``, and when it was read."""
        assert self.process.stdout is not None
        while True:
            while b"\n" in self._pending:
                line, _, self._pending = self._pending.partition(b"\n")
                if text.encode() in line:
                    return line.decode(errors="replace"), time.perf_counter()
            chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise SystemExit(f"the control plane exited before writing {text!r}")
            self._pending += chunk

    async def drain(self) -> None:
        """Read (and drop) the rest of its output, so it never blocks on it."""
        assert self.process.stdout is not None
        while await self.process.stdout.receive_some():
            pass

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


def journal_bytes(journal: Path) -> int:
    return sum(Path(f"{journal}{suffix}").stat().st_size for suffix in SUFFIXES
               if Path(f"{journal}{suffix}").exists())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def build(journal: Path, tasks: int) -> str:
    """Queue ``tasks`` tasks (a nap, then no-ops) in a control plane on
    ``journal``, kill it with SIGKILL; return the id of the first no-op."""
    env = environment(journal, FASTWORKER_CONCURRENCY="1",
                      FASTWORKER_QUEUE_CAPACITY=str(tasks + 1000))
    node = await Node.start(env)
    async with trio.open_nursery() as nursery:
        await node.wait_for("node control ready")
        nursery.start_soon(node.drain)
        async with Client(env["FASTWORKER_ADDRESS"], max_batch=1024) as client:
            await client.delay("examples.tasks.nap", 3600)  # holds the one slot
            first: list[str] = []
            chunk = 10_000
            for start in range(1, tasks, chunk):
                ids = await client.delay_many(NOOP, [()] * min(chunk, tasks - start))
                first = first or ids[:1]
        await node.kill()
        nursery.cancel_scope.cancel()
    return first[0]


#: What the start-up log says, in order, and the name of the time to it.
MARKS = (
    ("journal", "started journal"),  # the file opened, checked, its rows read
    ("store", "started results"),  # the stored results taken back
    ("inbox", "started inbox"),  # the tasks queued again
    ("ready", "node control ready"),  # every actor started: serving
)


async def recover(journal: Path, first: str | None) -> dict[str, float]:
    """Start a control plane on ``journal``; seconds from spawn to each of
    ``MARKS``, and to ``first``'s result in the hands of a client that
    connects once it is ready."""
    env = environment(journal)
    spawned = time.perf_counter()
    node = await Node.start(env)
    try:
        figures = {}
        for name, text in MARKS:
            line, at = await node.wait_for(text)
            figures[name] = at - spawned
            if name == "inbox":
                recovered = line.split("recovered ", 1)[1]
        figures["rss_mb"] = rss_mb(node.process.pid)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.drain)
            if first is not None:
                async with Client(env["FASTWORKER_ADDRESS"]) as client:
                    await client.result(first, timeout=60)
                figures["first_result"] = time.perf_counter() - spawned
            nursery.cancel_scope.cancel()
        print(f"    recovered {recovered}; " + ", ".join(
            f"{name} {value:.2f}" for name, value in figures.items()), flush=True)
        return figures
    finally:
        with trio.CancelScope(shield=True):
            await node.kill()


def copy(journal: Path, to: Path) -> Path:
    for suffix in SUFFIXES:
        if Path(f"{journal}{suffix}").exists():
            shutil.copyfile(f"{journal}{suffix}", f"{to}{suffix}")
    return to


def remove(journal: Path) -> None:
    for suffix in (*SUFFIXES, ".lock"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)


async def main(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="fastworker-recovery-", dir=args.dir))
    try:
        built = directory / "built.journal"
        started = time.perf_counter()
        first = await build(built, args.tasks)
        print(f"built a journal of {args.tasks:,} tasks (1 running, the rest queued no-ops) "
              f"through a control plane "
              f"killed with SIGKILL in {time.perf_counter() - started:.1f} s: "
              f"{journal_bytes(built) / 1e6:.1f} MB "
              f"(database {built.stat().st_size / 1e6:.1f} MB, write-ahead log "
              f"{Path(f'{built}-wal').stat().st_size / 1e6:.1f} MB)", flush=True)
        for name, source, wanted in [("empty journal", None, None), (
                f"{args.tasks:,} tasks", built, first)]:
            print(f"  {name}: {args.runs} starts (seconds from spawn; MB resident at ready)")
            runs = []
            for n in range(args.runs):
                journal = directory / f"run-{n}.journal"
                if source is not None:
                    copy(source, journal)
                runs.append(await recover(journal, wanted))
                remove(journal)
            print(f"  {name}: median " + ", ".join(
                f"{figure} {statistics.median(run[figure] for run in runs):.2f}"
                for figure in runs[0]), flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=str(ROOT),
                        help="where the journals go (a temporary directory in it; default: "
                             "the clone, the disk a control plane's journal is on by default)")
    trio.run(main, parser.parse_args())
