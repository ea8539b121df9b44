"""The subworker conversation on the wire (base+5).

``Register`` / ``Registered``, ``Heartbeat``, ``Pull`` (answered by an
``Assign``), ``Report``, ``Drain``, ``Deregister``, ``Ack`` and
``UnknownWorker``. Part of the wire spec: see ``fastworker.messages``.
"""

from __future__ import annotations

import attrs

from fastworker.messages.tasks import Outcome, Running, Slots

# -- workers (subworker <-> control plane on base+5) ----------------------------
#
# A subworker's WorkerLink sends request frames; each is answered by one reply
# frame. Register first; then one Pull is kept parked at the Dispatcher (it
# answers with an Assign when it has jobs for this worker), Reports carry
# credit and results, Heartbeats carry load. A control plane that does not
# know the worker (it restarted, or declared the worker lost) answers
# UnknownWorker, and the worker registers again.


@attrs.frozen(kw_only=True)
class HeldJob:
    """A job a subworker holds (assigned to it, not yet ended), as it tells
    a control plane it registers with again."""

    id: str
    attempt: int
    #: When it started (0: not yet), on the subworker's wall clock: for
    #: people, never compared with the control plane's.
    started_at: float = 0.0


@attrs.frozen(kw_only=True)
class Register:
    """Subworker -> Registry: I exist, and can run these tasks."""

    worker: str
    host: str
    pid: int
    #: Its slots per kind (``KINDS``): the jobs it starts at once.
    slots: Slots
    tasks: tuple[str, ...]
    #: The kind of slot each of ``tasks`` needs (``KINDS`` index), in order.
    kinds: tuple[int, ...] = ()
    #: Per kind, how much of its credit is prefetch now (jobs held beyond
    #: what it can start): it gets such jobs only once no free slot
    #: elsewhere can take them. It follows the worker's start rate; a
    #: ``Report`` tells a change.
    prefetch: Slots = (0, 0, 0)
    #: The most jobs it holds at once per kind: its slots plus its largest
    #: prefetch (all 0: ``slots`` plus ``prefetch``).
    holds: Slots = (0, 0, 0)
    #: Of ``tasks``, those never to be run twice (``@task(at_most_once=True)``).
    at_most_once: tuple[str, ...] = ()
    #: The jobs it holds now (registering again: a restarted control plane
    #: lets them end there rather than run them again).
    holding: tuple[HeldJob, ...] = ()
    #: The last Pull and Report numbers it used before (registering again):
    #: a copy of an older request, still on its way, is then known as stale.
    pull_seq: int = 0
    report_seq: int = 0
    #: The largest frame it takes (its ``max_frame_bytes``; 0: not said): an
    #: answer to its Pull is kept within it, and a job alone larger fails.
    max_frame_bytes: int = 0


@attrs.frozen(kw_only=True)
class Registered:
    """Registry -> subworker: welcome; heartbeat every ``heartbeat_interval``
    seconds: after ``missed_limit`` missed beats you are declared lost."""

    worker: str
    heartbeat_interval: float
    missed_limit: int


@attrs.frozen(kw_only=True)
class Heartbeat:
    """Subworker -> Registry: still here, with this load."""

    worker: str
    in_flight: int = 0
    succeeded_total: int = 0
    failed_total: int = 0


@attrs.frozen(kw_only=True)
class Pull:
    """Subworker -> Dispatcher: answer with an ``Assign`` as soon as there are
    jobs for me, or an empty one after ``wait`` seconds."""

    worker: str
    wait: float = 5.0
    #: Counts the worker's Pulls, from 1, across its registrations: one
    #: resent after a dropped connection has the number of the last one
    #: answered, and gets the same jobs again; one older than that is stale
    #: (a copy the network delayed) and gets nothing. Sending Pull N+1
    #: acknowledges the Assign that answered Pull N.
    seq: int = 0


@attrs.frozen(kw_only=True)
class Report:
    """Subworker -> Dispatcher: ``credit`` more free slots per kind
    (``KINDS``), these jobs started, these ended, these given back unstarted."""

    worker: str
    credit: Slots = (0, 0, 0)
    running: tuple[Running, ...] = ()
    finished: tuple[Outcome, ...] = ()
    #: Counts the worker's Reports: one seen before (resent after a lost
    #: answer) adds no credit twice.
    seq: int = 0
    #: The seq of the last Pull whose answer (an Assign) it received: an
    #: acknowledgement of that Assign's jobs, besides the next Pull.
    assigned: int = 0
    #: Ids of jobs it was assigned and gives back without having started
    #: them (drained, or stopping): queued again with the same attempt.
    returned: tuple[str, ...] = ()
    #: Its prefetch per kind now, if it changed since its last Report
    #: (empty: as before); see ``Register.prefetch``.
    prefetch: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class Drain:
    """Subworker -> Dispatcher: assign me nothing more (I am stopping); a
    parked Pull is answered at once."""

    worker: str


@attrs.frozen(kw_only=True)
class Deregister:
    """Subworker -> Registry: I am leaving; whatever I still hold is requeued."""

    worker: str


@attrs.frozen(kw_only=True)
class Ack:
    """Control plane -> subworker: the request was taken."""


@attrs.frozen(kw_only=True)
class UnknownWorker:
    """Control plane -> subworker: I do not know you (I restarted, or I
    declared you lost): register again."""

    worker: str
