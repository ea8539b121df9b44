"""The WorkerLink: a subworker's line to its control plane.

A subworker is an Executor wired to a WorkerLink instead of a Dispatcher and
a ResultStore (config/sub.toml). To the Executor the link is both: it takes
the Executor's ``Credit``, ``Running``, ``Finished`` and ``Returned`` and
hands it the jobs the control plane assigns. To the control plane it is a
requester on the workers port (base+5), over NNG req/rep, in four
conversations:

- ``Register`` once (again whenever the control plane answers
  ``UnknownWorker``: it restarted, or declared this worker lost), once the
  Executor's first ``Credit`` has come: its ``slots`` per kind of slot are
  the most jobs this worker holds, its ``tasks`` the tasks it runs and the
  kind of each (tasks the Executor learns later are told at the next
  registration);
- a ``Pull`` always parked at the Dispatcher, answered with an ``Assign``
  when there are jobs for this worker. Each Pull carries a sequence number
  that counts up for the life of the link (``Register`` says the last one
  used): a Pull resent after a dropped connection gets the same jobs again
  instead of losing them, a late copy of an older one gets none, and the
  next Pull (or a Report's ``assigned``) acknowledges the jobs received.
  Jobs received always reach the executor, even if the session ends
  meanwhile: registering again, the link lists them as held;
- ``Report``s: free credit per kind of slot, what started and ended, and
  the jobs the Executor gave back unstarted, batched: while one is in
  flight the next accumulates. A start alone waits up to ``running_delay``
  for company (the job's end, usually), so that a short task costs one
  Report, not two in a row;
- a ``Heartbeat`` every interval the Registry asked for, with the load.

While the control plane is unreachable, or has restarted and no longer
knows this worker, what the Executor reports waits here, in order: at most
``max_buffered_outcomes`` outcomes (and as many ``Running``), the oldest
dropped beyond that, counted (``LinkStats``) and logged; the ids of jobs
given back are never dropped (they are at most the jobs it held). It goes
out in Reports of bounded size once the link has registered again. A
Report is sent again until it is answered, so one whose answer was lost
may reach the control plane twice: the store keeps one result per
(task id, attempt), and counts the repeat; the Dispatcher takes a repeated
Report's credit and given-back jobs once.

With no ``address`` it looks for a control plane with the discovery beacon
(docs/discovery.md), and keeps looking, saying so every few seconds. An
address given always wins.

A graceful stop (SIGTERM) drains: ``stopping`` sends ``Drain`` (the
control plane assigns nothing more, and answers the parked Pull with what it
had placed). The link is stopped before the Executor it sends to: once the
Drain is answered and the last Pull's jobs are with the Executor, it asks
the Executor to give back what has not started (``Assign(give_back=True)``),
and goes on taking the Executor's reports (``Actor.serve_until``) until
every job it handed over has ended or come back, reports them (the jobs
given back are queued again on the control plane at once, for other
workers), then sends ``Deregister``: anything the control plane still
counts as held goes back to the queue. Then the node exits 0. An
``Assign`` with ``give_back`` from the control plane (an operator drained
this worker) reaches the Executor as it came.

``actor.py`` is the actor (options, message table, drain, snapshot),
``session.py`` the conversations with the control plane, ``reports.py``
the bounded buffer of what waits to be reported and the Reports' size.
"""

from fastworker.link.actor import LinkOptions as LinkOptions
from fastworker.link.actor import WorkerLink as WorkerLink
from fastworker.link.reports import DEFAULT_MAX_BUFFERED_OUTCOMES as DEFAULT_MAX_BUFFERED_OUTCOMES
from fastworker.link.reports import REPORT_MAX_ITEMS as REPORT_MAX_ITEMS
from fastworker.stats import LinkStats as LinkStats

__all__ = [
    "DEFAULT_MAX_BUFFERED_OUTCOMES",
    "LinkOptions",
    "LinkStats",
    "REPORT_MAX_ITEMS",
    "WorkerLink",
]

# Shown as fastworker.link:WorkerLink in logs and snapshots, where it was defined
# before this package was split (actors.topology.kind_name).
WorkerLink.__module__ = __name__
