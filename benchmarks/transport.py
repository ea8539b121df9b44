"""Throughput of actors.nng wires: push -> pull over TCP loopback, under trio.

Compares the two ways of driving a socket, ``io="async"`` (pynng's aio) and
``io="poll"`` (descriptors plus non-blocking calls), for 100 B and 10 KB
frames, and for frames that each carry a batch of 64 items of 100 B.

Each run is independent: this process opens a fresh pull listener, starts a
sender process (this script with ``--send-to``) that pushes one frame after
another as fast as it can, and counts what arrives during ``--seconds`` after
``--warm-up`` seconds; then it stops the sender. The warm-up matters: until
the kernel's socket buffers fill, a sender of small frames runs ahead and
takes CPU from the receiver (on 2 cores the first second reads ~2x low). The
table shows the median of ``--runs`` runs. Both ends use the same io mode and
run in separate processes, as a control plane and a subworker would.

Run: ``.venv/bin/python benchmarks/transport.py`` (about 50 s). Prints
figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import trio

from actors.nng import Io, open_wire

ITEMS_PER_BATCH = 64
ITEM_BYTES = 100
IO_MODES: list[Io] = ["async", "poll"]
# (label, frame bytes, items per frame)
BATCH = f"batch {ITEMS_PER_BATCH} x {ITEM_BYTES} B"
CASES = [("100 B", 100, 1), ("10 KB", 10_000, 1), (BATCH, 0, ITEMS_PER_BATCH)]


def batch_frame(items: int, item_bytes: int) -> bytes:
    """Items as a batch frame would carry them: each behind a 4-byte length."""
    item = item_bytes.to_bytes(4, "big") + b"i" * item_bytes
    return item * items


async def send_forever(address: str, io: Io, frame_bytes: int, items: int) -> None:
    """The sender process: push the same frame until killed."""
    push = await open_wire(address, pattern="push", mode="dial", recv_max_size=1024, io=io)
    frame = batch_frame(items, ITEM_BYTES) if items > 1 else b"f" * frame_bytes
    while True:
        await push.send_frame(frame)


async def one_run(
    io: Io, frame_bytes: int, items: int, warm_up: float, seconds: float
) -> tuple[float, float]:
    """Receive for ``seconds`` from a fresh sender; return (frames/s, MB/s)."""
    pull = await open_wire(
        "tcp://127.0.0.1:0", pattern="pull", mode="listen", recv_max_size=1 << 20, io=io
    )
    address = pull.name.rpartition(" ")[2]
    command = [sys.executable, __file__, "--send-to", address, "--io", io,
               "--frame-bytes", str(frame_bytes), "--items", str(items)]  # fmt: skip
    sender = await trio.lowlevel.open_process(command)
    try:
        with trio.fail_after(30):
            await pull.receive_frame()
            warm_until = trio.current_time() + warm_up
            while trio.current_time() < warm_until:
                await pull.receive_frame()
            frames = received_bytes = 0
            start = trio.current_time()
            deadline = start + seconds
            while (now := trio.current_time()) < deadline:
                received_bytes += len((await pull.receive_frame()).frame)
                frames += 1
    finally:
        sender.kill()
        await sender.wait()
        await pull.aclose()
    elapsed = now - start
    return frames / elapsed, received_bytes / elapsed / 1e6


async def main(runs: int, warm_up: float, seconds: float) -> None:
    print(f"push -> pull, tcp://127.0.0.1, sender and receiver in separate processes; "
          f"median of {runs} runs, each {seconds} s timed after {warm_up} s warm-up\n")  # fmt: skip
    header = f"{'io':<6} {'frame':<20} {'frames/s':>10} {'MB/s':>8} {'items/s':>11}"
    header += "  runs (frames/s)"
    print(header)
    print("-" * len(header))
    for label, frame_bytes, items in CASES:
        for io in IO_MODES:
            results = [
                await one_run(io, frame_bytes, items, warm_up, seconds) for _ in range(runs)
            ]
            rate = statistics.median(r[0] for r in results)
            megabytes = statistics.median(r[1] for r in results)
            spread = " ".join(f"{r[0]:,.0f}" for r in results)
            figures = f"{rate:>10,.0f} {megabytes:>8.1f} {rate * items:>11,.0f}"
            print(f"{io:<6} {label:<20} {figures}  {spread}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm-up", type=float, default=1.0, help="untimed start of a run")
    parser.add_argument("--seconds", type=float, default=0.5, help="timed part of a run")
    parser.add_argument("--send-to", help=argparse.SUPPRESS)
    parser.add_argument("--io", default="poll", choices=IO_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--frame-bytes", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=1, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.send_to:
        trio.run(
            send_forever, arguments.send_to, arguments.io, arguments.frame_bytes, arguments.items
        )
    else:
        trio.run(main, arguments.runs, arguments.warm_up, arguments.seconds)
