"""What every ``fastworker`` command that talks to a control plane shares:
its exit codes, a usage error only running shows, argument types, times,
tables."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable, Sequence

__all__ = ["EXIT", "Usage", "bounded", "iso", "table"]

#: What each exit code means.
EXIT = {"ok": 0, "no": 1, "usage": 2, "unreachable": 3}


class Usage(Exception):
    """A mistake in the command's arguments that only running it shows."""


def bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer within ``low..high``."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within {low}..{high}")
        return value
    return parse


def iso(wall: float) -> str | None:
    """Wall-clock seconds as local ISO 8601 (``None`` for 0: never)."""
    return (datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")
            if wall else None)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first one the header) as columns for people, each as wide
    as its widest cell, two spaces apart, no trailing spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                       strict=True)).rstrip()
                     for row in rows)
