"""Waiting for results: the client's one watch session at the store.

``result``, ``results``, ``as_completed`` and ``on_complete`` register
interest in ids here and wait on a ``Slot``. Poller tasks send ``Watch``
polls on the queries port, each carrying only the ids not yet sent, and
bring back every record of the session that became final, so N results
cost far fewer than N round trips. One poll is parked at the store at a
time; a poll carrying new ids sends the parked one home. Turning a record
into a value is not done here (``outcome``).

Across a restart of the control plane: every answer names the store's
``epoch``, new at each start, and every poll names the epoch last heard,
so the poll that the request socket sends again once the new control plane
listens is answered at once. On a new epoch the poller watches every id it
still waits for again (the new store knows those its journal kept) and
asks the new store about them; an id it has no record of when asked twice,
``LOST_RECHECK`` (1 s) apart, was lost with the restart, and its waiters
are told so.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable
from typing import Any, final

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fastworker.client.connection import Port
from fastworker.client.slot import Slot
from fastworker.errors import AnswerTooLarge, ConnectionLost, InvalidSubmission
from fastworker.limits import MAX_ID_LENGTH, MAX_QUERY_IDS, check_text
from fastworker.messages import (
    FINAL_STATES,
    Records,
    RemoteError,
    StatusQuery,
    Submit,
    TaskRecord,
    Watch,
)

__all__ = ["LOST_RECHECK", "ResultPoller", "lost_record", "never_seen", "unknown_record"]

log = logging.getLogger("fastworker.client")

#: Seconds after which a restarted store is asked again about an id it had
#: no record of, before that id's waiters are told it was lost: the store
#: may not yet know every task its control plane recovered when it first
#: answers.
LOST_RECHECK = 1.0


@final
class ResultPoller:
    """Waits for results through one watch session; run ``poll_forever``
    in a few tasks, and ``check_forever`` in one.

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
        self._limit = min(max_batch * 8, MAX_QUERY_IDS)
        self._poll_wait = poll_wait
        self._request_timeout = request_timeout
        self.waiters: dict[str, list[Slot[TaskRecord]]] = {}
        self.new_ids: dict[str, None] = {}  # waited for, not yet sent to the store
        self.elsewhere: set[str] = set()  # their Watch travels with their submission
        # Watched before their submission was accepted (map): the store may
        # not know them yet, so not having a record of them means nothing.
        self.unconfirmed: set[str] = set()
        #: The same for ids pipelines returned whose answers they have not
        #: taken yet (pipelines add and remove them; ``SyncPipeline`` adds
        #: from its caller's thread: single set operations, under the GIL).
        self.pending: set[str] = set()
        self.in_flight = 0
        self.closed = False
        #: The store's incarnation last heard ("": none yet).
        self.epoch = ""
        self._past_epochs: set[str] = set()
        #: Restarts of the control plane seen.
        self.restarts = 0
        self._to_check: dict[str, None] = {}  # ids to ask a restarted store about
        self._checking: set[str] = set()  # ids being asked about (not "never seen")
        self._answered = False  # a poll came back
        send, receive = anyio.create_memory_object_stream[None](math.inf)
        self._wake_send: MemoryObjectSendStream[None] = send
        self._wake_receive: MemoryObjectReceiveStream[None] = receive
        send, receive = anyio.create_memory_object_stream[None](math.inf)
        self._check_send: MemoryObjectSendStream[None] = send
        self._check_receive: MemoryObjectReceiveStream[None] = receive

    def expect(self, task_id: str, *, sent: bool = False,
               unconfirmed: bool = False) -> Slot[TaskRecord]:
        """Register interest in ``task_id``; ``sent``: a Watch for it is
        already on its way (``send_watched`` sends one with the submission);
        ``unconfirmed``: its submission is not accepted yet (``confirm``
        once it is): until then the store not knowing it is no sign it was
        lost."""
        if len(task_id) > MAX_ID_LENGTH:  # the store would refuse the poll that names it
            raise InvalidSubmission(check_text("task id", task_id, MAX_ID_LENGTH))
        slot: Slot[TaskRecord] = Slot()
        waiters = self.waiters.setdefault(task_id, [])
        waiters.append(slot)
        if unconfirmed:
            self.unconfirmed.add(task_id)
        if sent:
            self.elsewhere.add(task_id)
        elif len(waiters) == 1:
            self.new_ids[task_id] = None
            self._wake_send.send_nowait(None)
        return slot

    def confirm(self, task_id: str) -> None:
        """The submission of ``task_id`` was accepted: the store knows it."""
        self.unconfirmed.discard(task_id)

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
            self.unconfirmed.discard(task_id)

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
        watch = Watch(session=self.session, ids=(submit.id,), wait=self._poll_wait,
                      epoch=self.epoch)
        timeout = submit.queue_wait + self._poll_wait + self._request_timeout
        while True:
            try:
                answer, records = await self._port.ask([submit, watch], timeout)
                break
            except AnswerTooLarge:
                # The Watch's records would not fit one frame: the store kept
                # them and sends fewer next time. The submission was taken
                # (its id is accepted again) and the session has the id.
                watch = attrs.evolve(watch, ids=())
        assert isinstance(records, Records)
        # Delivered even if the submission was refused: the Watch may bring
        # other waiters' records, which the store hands out only once.
        self.deliver(records.records)
        self.resend(submit.id)
        self.heard(records.epoch)
        return answer

    def deliver(self, records: Iterable[TaskRecord]) -> None:
        """Answer the waiters of each of ``records``."""
        for record in records:
            for slot in self.waiters.pop(record.id, []):
                slot.set(record)
            self.elsewhere.discard(record.id)
            self.new_ids.pop(record.id, None)

    def resend(self, task_id: str) -> None:
        """Cover ``task_id`` by a poll again (its Watch came back without it)."""
        self.elsewhere.discard(task_id)
        if task_id in self.waiters:
            self.new_ids[task_id] = None
            self._wake_send.send_nowait(None)

    @property
    def _address(self) -> str:
        """Where the queries go, for messages."""
        return self._port.name.removeprefix("dialing ")

    def heard(self, epoch: str) -> None:
        """Note the store's ``epoch`` from an answer. A new one after another
        means the control plane restarted: every id still waited for is
        watched again, and checked (``check_lost``)."""
        if not epoch or epoch == self.epoch or epoch in self._past_epochs or self.closed:
            return  # the same store, or a late answer from an earlier one
        previous, self.epoch = self.epoch, epoch
        if not previous:
            return
        self._past_epochs.add(previous)
        self.restarts += 1
        # Ids whose Watch travels with their submission are not checked: the
        # new control plane may not have taken that submission yet; its
        # answer says what became of it, then a poll covers the id.
        ids = [task_id for task_id in self.waiters if task_id not in self.elsewhere]
        checked = [task_id for task_id in ids if task_id not in self.unconfirmed]
        log.warning(
            "the control plane at %s restarted: watching the %d task(s) this client "
            "waits for again", self._address, len(ids))
        for task_id in ids:
            self.new_ids[task_id] = None
        for task_id in checked:
            self._to_check[task_id] = None
        self._wake_send.send_nowait(None)
        self._check_send.send_nowait(None)

    async def check_forever(self) -> None:
        """Check the ids a restart left in doubt (``check_lost``), until
        cancelled. A task of its own: the polls go on meanwhile."""
        while True:
            await self._check_receive.receive()
            await self.check_lost()

    async def check_lost(self) -> None:
        """Ask the restarted store about the ids still to check, a batch at a
        time: final records go to their waiters; ids it has no record of,
        twice ``LOST_RECHECK`` apart, were lost with the restart."""
        limit, unknown, checking = self._limit, [], self._checking
        asked: list[str] = []
        try:
            while self._to_check:
                ids = list(itertools.islice(self._to_check, limit))
                for task_id in ids:
                    del self._to_check[task_id]
                checking.update(ids)
                asked += ids
                unknown += await self._ask_status([i for i in ids if i in self.waiters])
            if not unknown:
                return
            await anyio.sleep(LOST_RECHECK)
            for start in range(0, len(unknown), limit):
                ids = [i for i in unknown[start:start + limit] if i in self.waiters]
                lost = await self._ask_status(ids)
                self.deliver(lost_record(task_id, self._address) for task_id in lost)
        finally:
            checking.difference_update(asked)

    async def _ask_status(self, ids: list[str]) -> list[str]:
        """Deliver the final records among ``ids``; return the ids the store
        has no record of (none if it did not answer: polls go on)."""
        if not ids:
            return []
        try:
            (reply,) = await self._port.ask([StatusQuery(ids=tuple(ids))], self._request_timeout)
        except ConnectionLost:
            return []
        assert isinstance(reply, Records)
        self.deliver(record for record in reply.records if record.state in FINAL_STATES)
        self.heard(reply.epoch)
        return [record.id for record in reply.records if record.state == "unknown"]

    def close(self) -> None:
        """Fail every waiter, and close the wake-up queue."""
        self.closed = True
        for slots in self.waiters.values():
            for slot in slots:
                slot.fail(ConnectionLost("the client was closed"))
        self.waiters.clear()
        for stream in (self._wake_send, self._wake_receive, self._check_send,
                       self._check_receive):
            stream.close()

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
            # Not yet heard accepted when asked for: the store not knowing
            # them then says nothing.
            doubtful = (self.unconfirmed.intersection(ids) | self.pending.intersection(ids)
                        if self.unconfirmed or self.pending else ())
            self.in_flight += 1
            try:
                # Parked only once the store has answered (so its epoch is
                # known): a restart is noticed by the very first poll too.
                wait = self._poll_wait if self._answered else 0.0
                watch = Watch(session=self.session, ids=tuple(ids), wait=wait, epoch=self.epoch)
                (reply,) = await self._port.ask([watch], self._poll_wait + self._request_timeout)
            except AnswerTooLarge as error:
                # The store kept the records it could not send, and sends
                # them fewer at a time: poll again (the ids were sent).
                log.warning("%s; polling again", error)
                continue
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
            self._answered = True
            self.deliver(reply.records)
            restarted = bool(self.epoch) and reply.epoch != self.epoch
            self.heard(reply.epoch)
            if reply.unknown and not restarted:
                self._never_seen(reply.unknown, doubtful)
            if reply.waited_out and not self._to_check:
                # A whole poll passed with nothing final: ask whether the
                # store knows the ids at all (an expired or foreign id, or
                # a control plane that restarted, would be waited for
                # forever otherwise).
                unconfirmed = self.unconfirmed
                await self._settle_unknown(list(itertools.islice(
                    (task_id for task_id in self.waiters if task_id not in unconfirmed), limit)))

    def _never_seen(self, ids: Iterable[str], doubtful: Iterable[str]) -> None:
        """The store had no record of ``ids`` when asked: their waiters are
        told at once (``ResultUnknown``), except for ids whose submission
        was not yet heard accepted (``doubtful``, or still unconfirmed),
        whose Watch travels with their submission, or that a restart left
        in doubt; those are waited for as before."""
        skip = set(doubtful)
        waiters, unconfirmed, pending, elsewhere, to_check, checking = (
            self.waiters, self.unconfirmed, self.pending, self.elsewhere, self._to_check,
            self._checking)
        self.deliver(never_seen(task_id, self._address) for task_id in ids
                     if task_id in waiters and task_id not in skip
                     and task_id not in unconfirmed and task_id not in pending
                     and task_id not in elsewhere and task_id not in to_check
                     and task_id not in checking)

    async def _settle_unknown(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            (reply,) = await self._port.ask([StatusQuery(ids=tuple(ids))], self._request_timeout)
        except ConnectionLost:
            return  # the next poll will say so
        assert isinstance(reply, Records)
        self.deliver(record for record in reply.records if record.state == "unknown")
        self.heard(reply.epoch)


def unknown_record(task_id: str, message: str) -> TaskRecord:
    """A record that tells the waiters of ``task_id`` there is no result
    (``ResultUnknown`` with ``message``)."""
    return TaskRecord(id=task_id, state="unknown",
                      error=RemoteError(type="ResultUnknown", message=message))


def never_seen(task_id: str, address: str) -> TaskRecord:
    """The control plane at ``address`` has no record of ``task_id``."""
    return unknown_record(task_id, (
        f"the control plane at {address} has no record of task {task_id}: it was not "
        f"submitted there (or not since it last started without its journal; a result "
        f"dropped by the store's bounds is reported as such)"))


def lost_record(task_id: str, address: str) -> TaskRecord:
    """``task_id`` was lost when the control plane at ``address`` restarted."""
    return unknown_record(task_id, (
        f"the control plane at {address} restarted while this client waited for task "
        f"{task_id}, and has no record of it: the task was lost with the restart (its "
        f"journal is off) or its result had expired. Submit it again; to keep tasks "
        f"across a restart, run the control plane with its journal on (docs/durability.md)"))
