"""The task queue's errors.

    FastworkerError
    ├── QueueFull                      the control plane had no room in time
    ├── UnknownTask (LookupError)      no task of that name is registered
    ├── InvalidSubmission (ValueError) a submission cannot be queued as given
    ├── TaskError                      the task raised; carries the remote text
    │   ├── TaskTimeout (TimeoutError) it ran past its time limit
    │   ├── TaskCancelled              it was cancelled before it finished
    │   └── TaskExpired                its deadline (expires) passed before it started
    ├── ResultUnknown (LookupError)    the store has no record (never seen, or expired)
    ├── ConnectionLost (ConnectionError)  the link to the control plane dropped mid-call
    │   ├── NoControlPlane             nothing accepted a connection in time; nothing was sent
    │   └── AnswerTooLarge             its answer would not fit one frame; nothing was lost
    ├── SubmissionsRefused             pipelined submissions were refused (each id, and why)
    ├── DiscoveryTimeout               no control plane answered discovery probes in time
    ├── JournalUnavailable             the journal could not write (disk full, I/O error)
    └── Unavailable                    an actor of the control plane could not answer now

Waiting for a result past the caller's own timeout raises the builtin
``TimeoutError``. The journal's start-up errors (``JournalCorrupt``,
``JournalLocked``) stop a control plane, not a client: they are in
``fastworker.journal.errors``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastworker.messages import PROTOCOL_VERSION


class FastworkerError(Exception):
    """Base of every error the task queue raises."""


class QueueFull(FastworkerError):
    """Raised when the control plane's queue stayed full for as long as the
    submission was allowed to wait."""


class UnknownTask(FastworkerError, LookupError):
    """Raised when a submission names a task the control plane does not know;
    the message names close matches."""


class InvalidSubmission(FastworkerError, ValueError):
    """Raised when a submission cannot be queued as given (bad priority,
    arguments that cannot be pickled, a payload over the size limit), or
    when a client's own settings cannot be used (its secret file, its TLS)."""


class TaskError(FastworkerError):
    """Raised when a task raised: carries the remote exception's type name,
    message and traceback text. The exception class itself is never
    unpickled.

    Attributes:
        task_id: the task's id.
        remote_type: the remote exception's qualified class name.
        message: its ``str()``.
        traceback: the remote traceback, as text.
    """

    def __init__(self, task_id: str, remote_type: str, message: str, traceback: str = "") -> None:
        self.task_id = task_id
        self.remote_type = remote_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"task {task_id} failed: {remote_type}: {message}")


class TaskTimeout(TaskError, TimeoutError):
    """Raised when a task ran past its time limit."""


class TaskCancelled(TaskError):
    """Raised when a task was cancelled before it finished."""


class TaskExpired(TaskError):
    """Raised when a task's deadline (``expires``) passed before it started:
    it never ran."""


class ResultUnknown(FastworkerError, LookupError):
    """Raised when the control plane has no record of a task: it was never
    submitted there, or its result expired (TTL or eviction)."""


class ConnectionLost(FastworkerError, ConnectionError):
    """Raised when the link to the control plane dropped while a call was in
    flight; the call may or may not have taken effect."""


class NoControlPlane(ConnectionLost):
    """Raised when nothing accepted a connection at the control plane's
    address within the client's ``connect_timeout`` (2 s by default), and
    the client had never been connected: the call was not sent. Once a
    client has been connected, a control plane that goes away is waited
    for up to ``request_timeout`` instead (a restart is ridden through)."""


class AnswerTooLarge(ConnectionLost):
    """Raised when the control plane could not send its answer because it
    would not fit one frame (``max_frame_bytes``); it kept what it would
    have sent, and the call may be made again."""


class DiscoveryTimeout(FastworkerError):
    """Raised when no control plane of this protocol answered discovery
    probes in time.

    Attributes:
        port / targets / timeout: what was probed, for how long.
        mismatched: ``(address, protocol)`` of answers of another protocol.
    """

    def __init__(self, *, port: int, targets: Sequence[str], timeout: float,
                 mismatched: Sequence[tuple[str, int]] = ()) -> None:
        self.port, self.targets, self.timeout = port, list(targets), timeout
        self.mismatched = list(mismatched)
        super().__init__(
            f"no control plane answered discovery probes to {', '.join(targets)} on UDP "
            f"port {port} within {timeout:g} s{self.note(self.mismatched)}; set "
            "FASTWORKER_ADDRESS to give its address instead"
        )


    @staticmethod
    def note(mismatched: Sequence[tuple[str, int]]) -> str:
        """What was found of another protocol, for a message ("" if nothing)."""
        return "".join(
            f"; found a control plane at {address} speaking protocol {protocol}, "
            f"this is protocol {PROTOCOL_VERSION}"
            for address, protocol in mismatched
        )


class SubmissionsRefused(FastworkerError):
    """Raised by a pipeline (``Client.pipeline()``) when submissions sent
    through it were refused. ``refused`` maps each refused task id to the
    exception ``delay`` would have raised for it (``UnknownTask``,
    ``QueueFull``, ``InvalidSubmission``, ``ConnectionLost``); the other
    submissions were accepted."""

    def __init__(self, refused: dict[str, FastworkerError]) -> None:
        self.refused = dict(refused)
        kinds: dict[str, int] = {}
        for error in self.refused.values():
            kinds[type(error).__name__] = kinds.get(type(error).__name__, 0) + 1
        first_id, first = next(iter(self.refused.items()))
        counts = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        super().__init__(f"{len(self.refused)} pipelined submission(s) refused ({counts}); "
                         f"the first, task {first_id}: {first}")


class JournalUnavailable(FastworkerError):
    """Raised when the control plane's journal could not write (disk full, an
    I/O error): what was to be written was not, and is not acknowledged.
    The journal tries again with the next write, and recovers by itself."""


class Unavailable(FastworkerError):
    """Raised when the control plane answered, but one of its actors could
    not (it did not answer its peers in time, or failed): nothing was done;
    try again."""
