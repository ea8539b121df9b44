"""``fastworker`` with this process's wall clock shifted, for the clock tests:
``python -m tests.process.shifted_clock SECONDS run FILE ...``.

``time.time`` (and ``time.time_ns``) read ``SECONDS`` ahead of the machine's
clock (behind, if negative) before anything of fastworker is imported, as
on a host whose clock is off; trio's clock (monotonic) is left alone. Only
this process is affected, never the machine.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    shift = float(argv[0])
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + shift
    time.time_ns = lambda: real_time_ns() + int(shift * 1e9)
    from fastworker.cli import main as fastworker

    return fastworker(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
