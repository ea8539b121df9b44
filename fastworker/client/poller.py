"""Waiting for results: the client's one watch session at the store.

``result``, ``results``, ``as_completed`` and ``on_complete`` register
interest in ids here and wait on a ``Slot``. Poller tasks send ``Watch``
polls on the queries port, each carrying only the ids not yet sent, and
bring back every record of the session that became final, so N results
cost far fewer than N round trips. One poll is parked at the store at a
time; a poll carrying new ids sends the parked one home. Turning a record
into a value is not done here (``outcome``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any, final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fastworker.client.connection import Port
from fastworker.client.slot import Slot
from fastworker.errors import ConnectionLost
from fastworker.messages import Records, StatusQuery, Submit, TaskRecord, Watch

__all__ = ["ResultPoller"]


@final
class ResultPoller:
    """Waits for results through one watch session; run ``poll_forever``
    in a few tasks.

    Args:
        port: the queries port.
        session: the session's name at the store, unique per client.
        max_batch: an eighth of the most ids one poll carries.
        poll_wait: the longest one poll waits at the store.
        request_timeout: how long a question may go unanswered, beyond
            the time it may wait at the store.
    """

    def __init__(self, port: Port, *, session: str, max_batch: int, poll_wait: float,
                 request_timeout: float) -> None:
        self._port = port
        self.session = session
        self._limit = max_batch * 8
        self._poll_wait = poll_wait
        self._request_timeout = request_timeout
        self.waiters: dict[str, list[Slot[TaskRecord]]] = {}
        self.new_ids: dict[str, None] = {}  # waited for, not yet sent to the store
        self.elsewhere: set[str] = set()  # their Watch travels with their submission
        self.in_flight = 0
        self.closed = False
        send, receive = anyio.create_memory_object_stream[None](math.inf)
        self._wake_send: MemoryObjectSendStream[None] = send
        self._wake_receive: MemoryObjectReceiveStream[None] = receive

    def expect(self, task_id: str, *, sent: bool = False) -> Slot[TaskRecord]:
        """Register interest in ``task_id``; ``sent``: a Watch for it is
        already on its way (``send_watched`` sends one with the submission)."""
        slot: Slot[TaskRecord] = Slot()
        waiters = self.waiters.setdefault(task_id, [])
        waiters.append(slot)
        if sent:
            self.elsewhere.add(task_id)
        elif len(waiters) == 1:
            self.new_ids[task_id] = None
            self._wake_send.send_nowait(None)
        return slot

    def forget(self, task_id: str, slot: Slot[TaskRecord]) -> None:
        """Withdraw the interest ``slot`` stands for."""
        waiters = self.waiters.get(task_id)
        if waiters is None:
            return
        if slot in waiters:
            waiters.remove(slot)
        if not waiters:
            del self.waiters[task_id]
            self.new_ids.pop(task_id, None)
            self.elsewhere.discard(task_id)

    async def wait(self, task_id: str, timeout: float | None) -> TaskRecord:
        """The final record of ``task_id``.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
            ConnectionLost: a poll went unanswered, or the client closed.
        """
        slot = self.expect(task_id)
        try:
            with anyio.fail_after(timeout):
                return await slot.wait()
        finally:
            self.forget(task_id, slot)

    async def send_watched(self, submit: Submit) -> Any:
        """Send ``submit`` and a Watch for its id in one frame (register
        with ``expect(id, sent=True)`` first); return the answer to
        ``submit``. The records the Watch brings go to their waiters; if
        this one's is not among them, the polls cover it from now on."""
        answer, records = await self._port.ask(
            [submit, Watch(session=self.session, ids=(submit.id,), wait=self._poll_wait)],
            submit.queue_wait + self._poll_wait + self._request_timeout,
        )
        assert isinstance(records, Records)
        # Delivered even if the submission was refused: the Watch may bring
        # other waiters' records, which the store hands out only once.
        self.deliver(records.records)
        self.resend(submit.id)
        return answer

    def deliver(self, records: Iterable[TaskRecord]) -> None:
        """Answer the waiters of each of ``records``."""
        for record in records:
            for slot in self.waiters.pop(record.id, []):
                slot.set(record)
            self.elsewhere.discard(record.id)

    def resend(self, task_id: str) -> None:
        """Cover ``task_id`` by a poll again (its Watch came back without it)."""
        self.elsewhere.discard(task_id)
        if task_id in self.waiters:
            self.new_ids[task_id] = None
            self._wake_send.send_nowait(None)

    def close(self) -> None:
        """Fail every waiter, and close the wake-up queue."""
        self.closed = True
        for slots in self.waiters.values():
            for slot in slots:
                slot.fail(ConnectionLost("the client was closed"))
        self.waiters.clear()
        self._wake_send.close()
        self._wake_receive.close()

    async def poll_forever(self) -> None:
        """Poll while anything is waited for, until cancelled."""
        limit = self._limit
        while True:
            polled = len(self.waiters) - len(self.elsewhere)  # ids only a poll covers
            if not self.new_ids and (self.in_flight or polled <= 0):
                await self._wake_receive.receive()
                continue
            ids = list(itertools.islice(self.new_ids, limit))
            for task_id in ids:
                del self.new_ids[task_id]
            self.in_flight += 1
            try:
                (reply,) = await self._port.ask(
                    [Watch(session=self.session, ids=tuple(ids), wait=self._poll_wait)],
                    self._poll_wait + self._request_timeout,
                )
            except ConnectionLost as error:
                for slots in self.waiters.values():
                    for slot in slots:
                        slot.fail(error)
                self.waiters.clear()
                self.new_ids.clear()
                continue
            finally:
                self.in_flight -= 1
                self._wake_send.send_nowait(None)
            assert isinstance(reply, Records)
            self.deliver(reply.records)
            if reply.waited_out:
                # A whole poll passed with nothing final: ask whether the
                # store knows the ids at all (an expired or foreign id, or
                # a control plane that restarted, would be waited for
                # forever otherwise).
                await self._settle_unknown(list(itertools.islice(self.waiters, limit)))

    async def _settle_unknown(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            (reply,) = await self._port.ask([StatusQuery(ids=tuple(ids))], self._request_timeout)
        except ConnectionLost:
            return  # the next poll will say so
        assert isinstance(reply, Records)
        self.deliver(record for record in reply.records if record.state == "unknown")
