"""What freshness costs per request frame: pack and unpack of a signed
frame without a stamp (as before), and with one (the stamp taken, packed,
unpacked and checked against the replay window), in the same run.

    .venv/bin/python benchmarks/freshness.py [--quick]

A frame holds a batch of typical ``Submit`` messages (1, 16 or 64); each
way is timed over a few thousand frames per run, alternating, and the
median of the runs is reported in microseconds per frame, and last the
stamp and window check alone, without the frame around them. The replay
window is as a control plane has it after many senders: 1,000 senders
known, the frames coming from one of them. These machines are shared and
noisy: compare the two columns of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.frame import Framer  # noqa: E402
from actors.freshness import ReplayWindow, Stamper  # noqa: E402
from fastworker.messages import CODEC, Submit  # noqa: E402
from fastworker.payload import pack_call  # noqa: E402

BATCHES = (1, 16, 64)
PAYLOAD = pack_call((1, 2), {})


def submits(count: int) -> list[Submit]:
    return [Submit(id=f"{0x5EED0000_00000000 + n:016x}", task="app.tasks.add", payload=PAYLOAD)
            for n in range(count)]


def plain(framer: Framer, messages: list[Submit], frames: int) -> float:
    """Microseconds per frame: pack, then unpack, no stamp."""
    start = time.perf_counter()
    for _ in range(frames):
        framer.unpack(framer.pack(messages))
    return (time.perf_counter() - start) / frames * 1e6


def stamped(framer: Framer, messages: list[Submit], frames: int,
            stamper: Stamper, window: ReplayWindow) -> float:
    """Microseconds per frame: stamp, pack, unpack, check the window."""
    start = time.perf_counter()
    for _ in range(frames):
        stamp, _ = framer.unpack_stamped(framer.pack(messages, stamp=stamper.next()))
        assert stamp is not None and window.check(stamp) is None
    return (time.perf_counter() - start) / frames * 1e6


def check_only(frames: int, stamper: Stamper, window: ReplayWindow) -> float:
    """Microseconds per frame for the stamp and the window check alone."""
    start = time.perf_counter()
    for _ in range(frames):
        window.check(stamper.next())
    return (time.perf_counter() - start) / frames * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and runs")
    args = parser.parse_args()
    frames, runs = (500, 3) if args.quick else (5000, 7)
    framer = Framer(CODEC, secret=b"benchmark-secret")
    window = ReplayWindow()
    for sender in range(1000):
        window.check((window.epoch, sender + 1, 1))
    stamper = Stamper()
    stamper.learn(window.epoch)
    print(f"signed frames, median of {runs} runs of {frames} frames, µs per frame")
    print(f"{'batch':>6} {'no stamp':>10} {'stamped':>10} {'cost':>8}")
    for size in BATCHES:
        messages = submits(size)
        before: list[float] = []
        after: list[float] = []
        for _ in range(runs):
            before.append(plain(framer, messages, frames))
            after.append(stamped(framer, messages, frames, stamper, window))
        b, a = statistics.median(before), statistics.median(after)
        print(f"{size:>6} {b:>10.2f} {a:>10.2f} {a - b:>+8.2f}")
    alone = statistics.median(check_only(frames * 10, stamper, window) for _ in range(runs))
    print(f"the stamp and the window check alone: {alone:.2f} µs per frame")


if __name__ == "__main__":
    main()
