"""The task queue's errors.

    FastworkerError
    ├── QueueFull                      the control plane had no room in time
    ├── UnknownTask (LookupError)      no task of that name is registered
    ├── InvalidSubmission (ValueError) a submission cannot be queued as given
    ├── TaskError                      the task raised; carries the remote text
    │   ├── TaskTimeout (TimeoutError) it ran past its time limit
    │   └── TaskCancelled              it was cancelled before it finished
    ├── ResultUnknown (LookupError)    the store has no record (never seen, or expired)
    └── ConnectionLost (ConnectionError)  the link to the control plane dropped mid-call

Waiting for a result past the caller's own timeout raises the builtin
``TimeoutError``.
"""

from __future__ import annotations


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
    arguments that cannot be pickled, a payload over the size limit)."""


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
