"""Fair shares: the queue wait of 10 fairness keys when one of them floods.

Starts ``fastworker run config/control.toml`` on free loopback ports, then,
with and without fairness keys: one key ("flood") sends ``--flood`` sync
tasks of ``--seconds`` each at once, then 9 quiet keys send ``--quiet``
such tasks each. Printed per run: the seconds from each key's sending to
its last result, for the flood and for the quiet keys (median, slowest).
Without keys the quiet tasks wait behind the whole flood (first in first
out); with keys they take turns with it, and wait a few task slots.

    .venv/bin/python benchmarks/fairness.py [--flood 2000] [--quiet 5] [--runs 3]

Prints medians over the runs (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.pytest_plugin import free_tcp_ports  # noqa: E402
from benchmarks.scheduling import control_env, ready  # noqa: E402
from benchmarks.throughput import start, stop  # noqa: E402
from fastworker import Client  # noqa: E402

#: A sync task that blocks its worker for the seconds it is given.
BUSY = "examples.tasks.busy"
#: The fairness keys: one floods, the others are quiet.
KEYS = ["flood"] + [f"quiet-{n}" for n in range(1, 10)]


async def waits(address: str, flood: int, quiet: int, seconds: float,
                keyed: bool) -> dict[str, float]:
    """Seconds from each key's sending to its last result (each key is a
    client of its own, as tenants would be)."""
    done: dict[str, float] = {}
    flood_queued = trio.Event()

    async def send(key: str, count: int) -> None:
        async with Client(address, max_batch=1024) as client:
            sent = time.perf_counter()
            ids = await client.delay_many(BUSY, [(seconds,)] * count,
                                          fair_key=key if keyed else None)
            if key == KEYS[0]:
                flood_queued.set()
            await client.results(ids)
            done[key] = time.perf_counter() - sent

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, KEYS[0], flood)
        await flood_queued.wait()  # the whole flood is queued before the others send
        for key in KEYS[1:]:
            nursery.start_soon(send, key, quiet)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--quiet", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.005)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = control_env(address)
    with contextlib.ExitStack() as stack:
        stack.callback(stop, start("config/control.toml", env))
        trio.run(ready, address)
        print(f"1 key sends {args.flood} tasks of {args.seconds:g} s, then 9 keys "
              f"{args.quiet} each; median of {args.runs} runs", flush=True)
        for keyed in (False, True):
            runs = [trio.run(waits, address, args.flood, args.quiet, args.seconds, keyed)
                    for _ in range(args.runs)]
            flood = statistics.median(r["flood"] for r in runs)
            quiet = statistics.median(statistics.median(r[k] for k in KEYS[1:]) for r in runs)
            slowest = statistics.median(max(r[k] for k in KEYS[1:]) for r in runs)
            print(f"  {'with' if keyed else 'without'} fairness keys: flood {flood:.2f} s; "
                  f"quiet keys median {quiet:.3f} s, slowest {slowest:.3f} s", flush=True)


if __name__ == "__main__":
    main()
