"""The WorkerLink: a subworker's line to its control plane.

A subworker is an Executor wired to a WorkerLink instead of a Dispatcher and
a ResultStore (config/sub.toml). To the Executor the link is both: it takes
the Executor's ``Credit``, ``Running`` and ``Finished`` and hands it the
jobs the control plane assigns. To the control plane it is a requester on
the workers port (base+5), over NNG req/rep, in four conversations:

- ``Register`` once (again whenever the control plane answers
  ``UnknownWorker``: it restarted, or declared this worker lost);
- a ``Pull`` always parked at the Dispatcher, answered with an ``Assign``
  when there are jobs for this worker. Each Pull carries a sequence number
  that counts up for the life of the link (``Register`` says the last one
  used): a Pull resent after a dropped connection gets the same jobs again
  instead of losing them, a late copy of an older one gets none, and the
  next Pull (or a Report's ``assigned``) acknowledges the jobs received.
  Jobs received always reach the executor, even if the session ends
  meanwhile: registering again, the link lists them as held;
- ``Report``s: free credit, and what started and ended, batched: while one
  is in flight the next accumulates. A start alone waits up to
  ``running_delay`` for company (the job's end, usually), so that a short
  task costs one Report, not two in a row;
- a ``Heartbeat`` every interval the Registry asked for, with the load.

While the control plane is unreachable, or has restarted and no longer
knows this worker, what the Executor reports waits here, in order: at most
``max_buffered_outcomes`` outcomes (and as many ``Running``), the oldest
dropped beyond that, counted (``LinkStats``) and logged. It goes out in
Reports of bounded size once the link has registered again (issue 14). A
Report is sent again until it is answered, so one whose answer was lost
may reach the control plane twice: the store keeps one result per
(task id, attempt), and counts the repeat.

With no ``address`` it looks for a control plane with the discovery beacon
(docs/discovery.md), and keeps looking, saying so every few seconds. An
address given always wins.

A graceful stop (SIGTERM) drains: ``stopping`` sends ``Drain`` (the
control plane assigns nothing more, and answers the parked Pull with what it
had placed); the link, stopped before the Executor it sends to, goes on
taking the Executor's reports (``Actor.serve_until``) until every job it
handed over has ended, reports them, then sends ``Deregister``: anything
the control plane still counts as held goes back to the queue. Then the
node exits 0.

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
