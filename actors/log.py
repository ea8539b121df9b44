"""Logging helpers: one place that sets the format, and a rate limiter for
lines that hostile or broken peers could otherwise repeat without end.

Two formats: ``text``, one line per record with its full local time
(``2026-12-06T21:40:03.512+00:00 WARNING fastworker.tasks: ...``), and
``json``, one object per line for log shippers, with the stable keys
``time``, ``level``, ``logger`` and ``message`` (and ``exception`` when a
record carries one).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

import trio

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: The formats ``configure`` knows.
FORMATS = ("text", "json")


def _iso_time(created: float) -> str:
    """``created`` as local time in ISO 8601, to the millisecond, with its offset."""
    return datetime.datetime.fromtimestamp(created).astimezone().isoformat(
        timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``FORMAT`` with a full ISO 8601 time."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _iso_time(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": _iso_time(record.created), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


#: The last ``configure``'s level and format (``None``: never called), for
#: processes this one starts to log the same way.
_configured: tuple[int | str, str] | None = None


def configured() -> tuple[int | str, str] | None:
    """The level and format the last ``configure`` set, or ``None``."""
    return _configured


def configure(level: int | str = logging.INFO, fmt: str = "text") -> None:
    """Send log lines to stderr in the runtime's format, ``text`` or
    ``json`` (idempotent: a second call sets the level and format)."""
    global _configured
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _configured = (level, fmt)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_actors", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._actors = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
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
