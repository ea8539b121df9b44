"""The journal's file format: its tables, its version, and rows <-> ops.

One SQLite database in WAL mode. ``PRAGMA application_id`` marks it as a
fastworker journal and ``PRAGMA user_version`` is the version of these
tables: a file with another id or version is refused, never migrated
silently. Jobs and records are stored as the bytes of the journal codec
(msgpack of the same attrs classes the wire uses), so a row decodes with
the same strict checks as a frame. Nothing here opens files.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, groupby
from typing import Any, Final, TypeVar

from actors import Codec
from fastworker.journal.ops import (
    DropResult,
    DropSchedule,
    DropTask,
    DropWorkflow,
    Op,
    PutRecord,
    PutResult,
    PutSchedule,
    PutTask,
    PutWorkflow,
    SetState,
)
from fastworker.messages import PROTOCOL_VERSION, Job, StartWorkflow, TaskRecord

__all__ = [
    "APPLICATION_ID",
    "CODEC",
    "ROWS_PER_STATEMENT",
    "SCHEMA",
    "VERSION",
    "apply_ops",
    "decode_job",
    "decode_record",
    "task_from_row",
    "workflow_from_row",
]

#: ``PRAGMA application_id`` of a journal: "FWJ1".
APPLICATION_ID: Final = 0x46574A31
#: ``PRAGMA user_version``: the version of the tables below.
VERSION: Final = 3
#: Version 3 added ``workflows``; ``fastworker journal salvage`` brings an
#: older file to this version.
#: Jobs, records and workflows as bytes. Its own codec (the wire's has no TaskRecord);
#: the wire protocol's version is kept in ``meta`` for whoever reads the file.
CODEC: Final = Codec([Job, TaskRecord, StartWorkflow], protocol=PROTOCOL_VERSION)
D = TypeVar("D", Job, TaskRecord, StartWorkflow)

SCHEMA: Final = """
CREATE TABLE tasks (
    id     TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL,   -- arrival order: kept when a task is put again
    level  INTEGER NOT NULL,   -- 0 critical .. 3 low
    state  TEXT NOT NULL,      -- queued | scheduled | dispatched
    due_at REAL NOT NULL,      -- wall clock, for scheduled
    key    TEXT NOT NULL,      -- idempotency key, '' none
    job    BLOB NOT NULL,      -- the Job, encoded
    once   INTEGER NOT NULL DEFAULT 0,  -- 1: dispatched at-most-once task
    record BLOB                -- its TaskRecord with earlier attempts, NULL none
);
CREATE TABLE results (
    id       TEXT PRIMARY KEY,
    final_at REAL NOT NULL,    -- wall clock
    record   BLOB NOT NULL     -- the final TaskRecord, encoded
);
CREATE TABLE schedules (
    name     TEXT PRIMARY KEY,
    last_run REAL NOT NULL,
    last_id  TEXT NOT NULL
);
CREATE TABLE workflows (
    id         TEXT PRIMARY KEY,
    started_at REAL NOT NULL,    -- wall clock
    generation INTEGER NOT NULL, -- retries from a failure so far
    failed     INTEGER NOT NULL, -- 1: failed, kept for a retry
    start      BLOB NOT NULL     -- the StartWorkflow, encoded
);
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_PUT_TASKS = (
    "INSERT INTO tasks (id, seq, level, state, due_at, key, job) VALUES {rows} "
    "ON CONFLICT (id) DO UPDATE SET level = excluded.level, state = excluded.state, "
    "due_at = excluded.due_at, key = excluded.key, job = excluded.job"
)
_SET_STATES = "UPDATE tasks SET state = ?, due_at = ?, once = ? WHERE id IN ({ids})"
_PUT_RECORD = "UPDATE tasks SET record = ? WHERE id = ?"
_DROP_TASKS = "DELETE FROM tasks WHERE id IN ({ids})"
_PUT_RESULTS = "INSERT OR REPLACE INTO results (id, final_at, record) VALUES {rows}"
_DROP_RESULTS = "DELETE FROM results WHERE id IN ({ids})"
_PUT_SCHEDULE = "INSERT OR REPLACE INTO schedules (name, last_run, last_id) VALUES (?, ?, ?)"
_DROP_SCHEDULE = "DELETE FROM schedules WHERE name = ?"
_PUT_WORKFLOW = ("INSERT OR REPLACE INTO workflows (id, started_at, generation, failed, start) "
                 "VALUES (?, ?, ?, ?, ?)")
_DROP_WORKFLOW = "DELETE FROM workflows WHERE id = ?"

#: Rows in one statement at most. sqlite3 lets go of the GIL for each step
#: of a statement and must take it back after: with ``executemany`` that is
#: once per row, and under a busy trio thread each taking back can wait for
#: the interpreter's switch interval. A batch of ops is a few statements of
#: many rows instead (sizes are powers of two, so that few statement texts
#: exist and sqlite3's cache keeps them prepared).
ROWS_PER_STATEMENT: Final = 128


def apply_ops(db: sqlite3.Connection, ops: Sequence[Op], next_seq: Callable[[], int]) -> None:
    """Run ``ops`` on ``db`` inside the caller's transaction, in order.

    Consecutive ops of one kind go in as few statements as they fit
    (``ROWS_PER_STATEMENT`` rows each), and ops of different kinds keep
    their order (a task put and finished in one batch ends up finished).

    Raises:
        TypeError: an item is not an op.
    """
    for kind, run in groupby(ops, type):
        apply = _APPLY.get(kind)
        if apply is None:
            raise TypeError(f"not a journal op: {kind.__qualname__} (ops are in fastworker.journal.ops)")
        apply(db, list(run), next_seq)


def _sizes(n: int) -> Iterator[int]:
    """Split ``n`` rows into statements: full ones, then powers of two."""
    full, rest = divmod(n, ROWS_PER_STATEMENT)
    yield from (ROWS_PER_STATEMENT,) * full
    size = ROWS_PER_STATEMENT // 2
    while rest:
        if rest >= size:
            yield size
            rest -= size
        size //= 2


@functools.lru_cache(maxsize=256)
def _statement(template: str, size: int, width: int) -> str:
    """``template`` for ``size`` rows of ``width`` values (``{rows}``), or
    ``size`` ids (``{ids}``)."""
    row = "(" + ", ".join("?" * width) + ")"
    return template.format(rows=", ".join([row] * size), ids=", ".join("?" * size))


def _rows(db: sqlite3.Connection, template: str, rows: list[tuple[Any, ...]],
          first: tuple[Any, ...] = ()) -> None:
    """Run ``template`` over ``rows`` (each of the same width; for ``{ids}``
    each a 1-tuple), a statement per ``_sizes`` chunk, with ``first``
    before each chunk's values."""
    if not rows:
        return
    width, start = len(rows[0]), 0
    for size in _sizes(len(rows)):
        values = chain(first, chain.from_iterable(rows[start:start + size]))
        db.execute(_statement(template, size, width), tuple(values))
        start += size


def _put_tasks(db: sqlite3.Connection, ops: list[PutTask], next_seq: Callable[[], int]) -> None:
    encode = CODEC.encode
    _rows(db, _PUT_TASKS, [
        (op.job.id, next_seq(), op.job.priority, op.state, op.due_at, op.key, encode([op.job]))
        for op in ops
    ])


def _set_states(db: sqlite3.Connection, ops: list[SetState], next_seq: Callable[[], int]) -> None:
    # One statement per run of ops that set the same thing, in order (a task
    # moved twice in one batch ends where the second move put it).
    for (state, due_at, once), run in groupby(ops, lambda op: (op.state, op.due_at, op.once)):
        _rows(db, _SET_STATES, [(task_id,) for op in run for task_id in op.ids],
              first=(state, due_at, int(once)))


def _drop_tasks(db: sqlite3.Connection, ops: list[DropTask], next_seq: Callable[[], int]) -> None:
    _rows(db, _DROP_TASKS, [(op.id,) for op in ops])


def _put_records(db: sqlite3.Connection, ops: list[PutRecord], next_seq: Callable[[], int]) -> None:
    encode = CODEC.encode  # a failed attempt's: rare, one statement each
    db.executemany(_PUT_RECORD, [(encode([op.record]), op.record.id) for op in ops])


def _put_results(db: sqlite3.Connection, ops: list[PutResult], next_seq: Callable[[], int]) -> None:
    encode = CODEC.encode
    _rows(db, _PUT_RESULTS, [(op.record.id, op.final_at, encode([op.record])) for op in ops])
    _rows(db, _DROP_TASKS, [(op.record.id,) for op in ops])


def _drop_results(db: sqlite3.Connection, ops: list[DropResult], next_seq: Callable[[], int]) -> None:
    _rows(db, _DROP_RESULTS, [(op.id,) for op in ops])


def _put_schedules(
    db: sqlite3.Connection, ops: list[PutSchedule], next_seq: Callable[[], int]
) -> None:
    db.executemany(_PUT_SCHEDULE, [(op.name, op.last_run, op.last_id) for op in ops])


def _drop_schedules(
    db: sqlite3.Connection, ops: list[DropSchedule], next_seq: Callable[[], int]
) -> None:
    db.executemany(_DROP_SCHEDULE, [(op.name,) for op in ops])


def _put_workflows(
    db: sqlite3.Connection, ops: list[PutWorkflow], next_seq: Callable[[], int]
) -> None:
    encode = CODEC.encode  # one per workflow started, failed or retried: a statement each
    db.executemany(_PUT_WORKFLOW, [
        (op.start.id, op.started_at, op.generation, int(op.failed), encode([op.start]))
        for op in ops])


def _drop_workflows(
    db: sqlite3.Connection, ops: list[DropWorkflow], next_seq: Callable[[], int]
) -> None:
    db.executemany(_DROP_WORKFLOW, [(op.id,) for op in ops])


_APPLY: dict[type, Callable[[sqlite3.Connection, list[Any], Callable[[], int]], None]] = {
    PutTask: _put_tasks,
    SetState: _set_states,
    DropTask: _drop_tasks,
    PutRecord: _put_records,
    PutResult: _put_results,
    DropResult: _drop_results,
    PutSchedule: _put_schedules,
    DropSchedule: _drop_schedules,
    PutWorkflow: _put_workflows,
    DropWorkflow: _drop_workflows,
}


def decode_job(blob: object) -> Job:
    """The Job a ``tasks.job`` value holds.

    Raises:
        ValueError: it does not decode to one Job (the reason is short).
    """
    return _decode_one(blob, Job)


def decode_record(blob: object) -> TaskRecord:
    """The TaskRecord a ``results.record`` (final) or ``tasks.record``
    (live, with earlier attempts) value holds.

    Raises:
        ValueError: it does not decode to one TaskRecord.
    """
    return _decode_one(blob, TaskRecord)


def _decode_one(blob: object, cls: type[D]) -> D:
    if not isinstance(blob, bytes):
        raise ValueError(f"expected bytes, got {type(blob).__name__}")
    try:
        decoded = CODEC.decode(blob)
    except Exception as error:  # FrameError, and anything odder from a damaged row
        raise ValueError(str(error)) from None
    if len(decoded) != 1 or type(decoded[0]) is not cls:
        raise ValueError(f"expected one {cls.__name__}")
    found: D = decoded[0]
    return found


def task_from_row(state: object, due_at: object, key: object, blob: object) -> PutTask:
    """The ``PutTask`` that a row of ``tasks`` is.

    Raises:
        ValueError: a column is not what the journal writes.
    """
    if not isinstance(due_at, (int, float)) or not isinstance(key, str):
        raise ValueError("a column holds a value of the wrong type")
    if not isinstance(state, str):
        raise ValueError(f"state is {type(state).__name__}")
    # PutTask's validator names a bad state.
    return PutTask(decode_job(blob), state, float(due_at), key)  # type: ignore[arg-type]


def workflow_from_row(started_at: object, generation: object, failed: object,
                      blob: object) -> PutWorkflow:
    """The ``PutWorkflow`` that a row of ``workflows`` is.

    Raises:
        ValueError: a column is not what the journal writes.
    """
    if (not isinstance(started_at, (int, float)) or not isinstance(generation, int)
            or generation < 0 or failed not in (0, 1)):
        raise ValueError("a column holds a value of the wrong type")
    return PutWorkflow(_decode_one(blob, StartWorkflow), float(started_at), generation,
                       bool(failed))
