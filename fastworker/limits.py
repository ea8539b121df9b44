"""The sizes a client controls, and their limits: one place for both sides.

A client chooses a task's id, its name, an idempotency key, a fairness
key and the ids it
asks about; the control plane keeps them (queues, records, watch sets), so
each has a limit here. The client refuses a value over a limit before
sending it (``build_submit``); the control plane checks again whatever it
receives (``check_submit`` in the inbox, ``check_query`` in the store), so
a hand-made frame is refused the same way, with the field and the limit
named ("id is 1000000 characters; the limit is 256").

The checks run for every submission and every poll: they are ``len`` and
type comparisons only, and allocate nothing when all is well. This module
decides nothing else (time values are ``fastworker.submission``'s).
"""

from __future__ import annotations

import math
from typing import Final, get_args

from fastworker.messages import (
    KINDS,
    PRIORITIES,
    ListTasks,
    Purge,
    Register,
    ResultQuery,
    RetryTasks,
    SetDrain,
    State,
    StatusQuery,
    Watch,
)

__all__ = [
    "MAX_BULK",
    "MAX_FAIR_KEY_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_OFFSET",
    "MAX_PAGE",
    "MAX_PREFETCH",
    "MAX_QUERY_IDS",
    "MAX_RETRIES",
    "MAX_TASK_NAME_LENGTH",
    "MAX_WORKER_TASKS",
    "RESERVED_SESSION_PREFIX",
    "check_admin",
    "check_list",
    "check_prefetch",
    "check_query",
    "check_register",
    "check_text",
]

#: The most prefetch per kind of slot an executor takes (its ``prefetch``
#: option) and a subworker may say it has.
MAX_PREFETCH: Final = 65_536
#: The longest task id, in characters (a client's ``task_id``, ``retry_of``,
#: and every id a query names); ids the client makes are 16.
MAX_ID_LENGTH: Final = 256
#: The longest task name, in characters (``module.function`` by default).
MAX_TASK_NAME_LENGTH: Final = 512
#: The longest idempotency key (``key=``), in characters.
MAX_KEY_LENGTH: Final = 256
#: The longest fairness key (``fair_key=``), in characters.
MAX_FAIR_KEY_LENGTH: Final = 256
#: The most retries a submission may ask for (``retries=``).
MAX_RETRIES: Final = 1_000_000
#: The most ids one ``ResultQuery``, ``StatusQuery`` or ``Watch`` may name;
#: the client asks about more a batch at a time.
MAX_QUERY_IDS: Final = 100_000
#: Records one ``ListTasks`` page holds at most.
MAX_PAGE: Final = 500
#: The largest ``ListTasks`` offset.
MAX_OFFSET: Final = 10_000_000
#: The most tasks one ``RetryTasks`` may name or retry.
MAX_BULK: Final = 10_000
#: The most task names one subworker may register (and, of them,
#: at-most-once ones); the jobs it says it holds are bounded by its slots.
MAX_WORKER_TASKS: Final = 10_000


def check_text(name: str, value: object, limit: int, *, empty: bool = True) -> str | None:
    """What is wrong with the string field ``name``, or ``None``: not a
    string, longer than ``limit`` characters, or empty when ``empty`` is
    false."""
    if type(value) is not str:
        return f"{name} must be a string, got {type(value).__name__}"
    if len(value) > limit:
        return f"{name} is {len(value)} characters; the limit is {limit}"
    if not value and not empty:
        return f"{name} must not be empty"
    return None


#: Watch sessions whose names start so are the control plane's own actors'
#: (the Workflows'); a client's are refused.
RESERVED_SESSION_PREFIX: Final = "fastworker."


def check_query(query: ResultQuery | StatusQuery | Watch, *,
                internal: bool = False) -> str | None:
    """What is wrong with a query a client sent (or, ``internal``, an actor
    of the control plane), or ``None``: too many ids, an id too long, a
    ``wait`` that is not a number of seconds >= 0, a watch session or
    epoch name too long, or a client's session of a reserved name."""
    kind = type(query).__name__
    ids = query.ids
    if len(ids) > MAX_QUERY_IDS:
        return f"{kind} names {len(ids)} ids; the limit is {MAX_QUERY_IDS}"
    for id in ids:
        if len(id) > MAX_ID_LENGTH:
            return f"{kind} id is {len(id)} characters; the limit is {MAX_ID_LENGTH}"
    if isinstance(query, StatusQuery):
        return None
    wait = query.wait
    if not (0.0 <= wait < math.inf):  # NaN fails this too
        return f"{kind} wait {wait!r} is not a number of seconds >= 0"
    if isinstance(query, Watch):
        if not internal and query.session.startswith(RESERVED_SESSION_PREFIX):
            return (f"Watch session names starting with {RESERVED_SESSION_PREFIX!r} are the "
                    "control plane's own")
        return (check_text("Watch session", query.session, MAX_ID_LENGTH)
                or check_text("Watch epoch", query.epoch, MAX_ID_LENGTH))
    return None


def check_list(query: ListTasks) -> str | None:
    """What is wrong with a ``ListTasks`` a client sent, or ``None``: a page
    larger than ``MAX_PAGE``, a negative offset, an unknown state, a task
    name or id part too long."""
    if not 1 <= query.limit <= MAX_PAGE:
        return f"ListTasks limit {query.limit} is not within 1..{MAX_PAGE}"
    if not 0 <= query.offset <= MAX_OFFSET:
        return f"ListTasks offset {query.offset} is not within 0..{MAX_OFFSET}"
    if query.state is not None and query.state not in get_args(State):
        return (f"ListTasks state {query.state!r} is not one of "
                f"{', '.join(get_args(State))}")
    return (check_text("ListTasks task", query.task or "", MAX_TASK_NAME_LENGTH)
            or check_text("ListTasks id", query.id or "", MAX_ID_LENGTH))


def check_admin(message: Purge | RetryTasks | SetDrain) -> str | None:
    """What is wrong with an operator's ``Purge``, ``RetryTasks`` or
    ``SetDrain``, or ``None``: an unknown priority, too many ids or too
    large a limit, a name or id too long."""
    if isinstance(message, Purge):
        if message.priority is not None and message.priority not in PRIORITIES:
            return (f"Purge priority {message.priority!r} is not one of "
                    f"{', '.join(PRIORITIES)}")
        return check_text("Purge task", message.task or "", MAX_TASK_NAME_LENGTH)
    if isinstance(message, SetDrain):
        return check_text("SetDrain worker", message.worker, MAX_ID_LENGTH, empty=False)
    if len(message.ids) > MAX_BULK:
        return f"RetryTasks names {len(message.ids)} ids; the limit is {MAX_BULK}"
    if not 1 <= message.limit <= MAX_BULK:
        return f"RetryTasks limit {message.limit} is not within 1..{MAX_BULK}"
    if not 0.0 <= message.before < math.inf:  # NaN fails this too
        return f"RetryTasks before {message.before!r} is not a time >= 0"
    if problem := check_text("RetryTasks nonce", message.nonce, 32):
        return problem
    for id in message.ids:
        if problem := check_text("RetryTasks id", id, MAX_ID_LENGTH, empty=False):
            return problem
    return check_text("RetryTasks task", message.task or "", MAX_TASK_NAME_LENGTH)


def check_register(register: Register) -> str | None:
    """What is wrong with a subworker's ``Register``, or ``None``: a worker
    or host name too long, too many task names or one too long, kinds of
    slot not one per task or out of range, a slot or prefetch count that
    is not 0 or more, a negative Pull or Report number or frame limit, more held jobs
    than slots, or a held job's id too long. The registry keeps all of it
    for as long as the worker lives, so a signed peer is bounded too."""
    problem = (check_text("worker name", register.worker, MAX_ID_LENGTH, empty=False)
               or check_text("host name", register.host, MAX_ID_LENGTH))
    if problem is not None:
        return problem
    for field, names in (("tasks", register.tasks), ("at_most_once", register.at_most_once)):
        if len(names) > MAX_WORKER_TASKS:
            return f"{field} names {len(names)} tasks; the limit is {MAX_WORKER_TASKS}"
        for name in names:
            if (problem := check_text("a task name", name, MAX_TASK_NAME_LENGTH)) is not None:
                return problem
    kinds = register.kinds
    if kinds and len(kinds) != len(register.tasks):
        return (f"kinds names {len(kinds)} kinds for {len(register.tasks)} tasks; "
                "expected one per task, or none")
    for kind in kinds:
        if not 0 <= kind < len(KINDS):
            return f"a task's kind is {kind}; expected 0 to {len(KINDS) - 1} (KINDS)"
    slots = register.slots
    if len(slots) != len(KINDS):
        return f"slots has {len(slots)} counts; expected {len(KINDS)} ({', '.join(KINDS)})"
    for name, count in zip(KINDS, slots, strict=True):
        if count < 0:
            return f"slots for {name} is {count}; expected 0 or more"
    if (problem := check_prefetch(register.prefetch)) is not None:
        return problem
    for field, number in (("pull_seq", register.pull_seq), ("report_seq", register.report_seq),
                          ("max_frame_bytes", register.max_frame_bytes)):
        if number < 0:
            return f"{field} is {number}; expected 0 or more"
    holds = register.holds
    if any(holds):
        if len(holds) != len(KINDS):
            return f"holds has {len(holds)} counts; expected {len(KINDS)} ({', '.join(KINDS)})"
        for name, count, least in zip(KINDS, holds, slots, strict=True):
            if count < least:
                return f"holds for {name} is {count}; expected at least its slots ({least})"
        most = sum(holds)
    else:
        most = sum(slots) + sum(register.prefetch)
    if len(register.holding) > most:
        return f"it holds {len(register.holding)} jobs where it holds at most {most}"
    for held in register.holding:
        if (problem := check_text("a held job's id", held.id, MAX_ID_LENGTH)) is not None:
            return problem
    return None


def check_prefetch(prefetch: tuple[int, ...]) -> str | None:
    """What is wrong with a subworker's prefetch per kind (``Register``,
    ``Report``), or ``None``: one count per kind of slot, each 0 to
    ``MAX_PREFETCH``."""
    if len(prefetch) != len(KINDS):
        return (f"prefetch has {len(prefetch)} counts; expected {len(KINDS)} "
                f"({', '.join(KINDS)})")
    for name, count in zip(KINDS, prefetch, strict=True):
        if not 0 <= count <= MAX_PREFETCH:
            return f"prefetch for {name} is {count}; expected 0 to {MAX_PREFETCH}"
    return None
