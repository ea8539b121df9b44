"""What handling produced for the store and the inbox, not yet sent.

Handling a message only appends here; the Dispatcher sends it all once per
handled batch or call (``Dispatcher._dispatch``), so many messages become a
few ``send_batch``es. Nothing here sends or decides.
"""

from __future__ import annotations

from typing import Any

from fastworker.internal import Adopted
from fastworker.messages import Job

__all__ = ["Outgoing"]


class Outgoing:
    """Messages and jobs waiting to be sent at the end of a handled batch."""

    __slots__ = ("results", "requeue", "retries", "retry_delays", "cancel_queued", "adopted")

    def __init__(self) -> None:
        #: For the ResultStore: Running, Finished, Cancelled, Dispatched.
        self.results: list[Any] = []
        #: Jobs back to the front of the queue (a gone worker's), in order.
        self.requeue: list[Job] = []
        #: Failed attempts to run again (their next attempt), and after how long.
        self.retries: list[Job] = []
        self.retry_delays: list[float] = []
        #: Queued redeliveries to cancel (a late result came for them).
        self.cancel_queued: list[str] = []
        #: For the inbox: what became of recovered tasks a subworker holds.
        self.adopted: list[Adopted] = []
