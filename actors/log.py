"""Logging helpers: one place that sets the format, and a rate limiter for
lines that hostile or broken peers could otherwise repeat without end."""

from __future__ import annotations

import logging
import sys

import trio

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: int | str = logging.INFO) -> None:
    """Send log lines to stderr in the runtime's format (idempotent)."""
    root = logging.getLogger()
    if not any(getattr(h, "_actors", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        handler._actors = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


class RateLimitedLog:
    """Logs a kind of event at most once per ``period`` seconds of trio time,
    saying how many happened since the last line.

    Example::

        dropped = RateLimitedLog(log, period=60)
        dropped.event("dropped frame from %s: %s", peer, reason)
        # -> "dropped frame from tcp://127.0.0.1:53211: bad auth tag
        #     (12 dropped in the last 60 s)"
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        what: str = "dropped",
        period: float = 60.0,
        level: int = logging.WARNING,
    ) -> None:
        self.logger = logger
        self.what = what
        self.period = period
        self.level = level
        self.total = 0
        self._window_start: float | None = None
        self._in_window = 0

    def event(self, message: str, *args: object) -> bool:
        """Count one event; log it if the window allows. Returns whether it logged."""
        self.total += 1
        self._in_window += 1
        now = trio.current_time()
        if self._window_start is not None and now - self._window_start < self.period:
            return False
        count = self._in_window
        self._window_start = now
        self._in_window = 0
        self.logger.log(
            self.level,
            message + " (%d %s in the last %g s)",
            *args,
            count,
            self.what,
            self.period,
        )
        return True
