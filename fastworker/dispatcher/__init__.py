"""The Dispatcher: matches queued jobs with free worker slots.

Workers say how many more jobs they can take (credit); the Dispatcher asks
the PriorityInbox for that many and places each job on the live worker with
the most free credit that can run it: the local executor by ``Assign``, a
subworker as the answer to its parked ``Pull``. docs/dispatcher.md tells the
whole story. ``actor.py`` is the actor, ``placement.py`` the credit and the
choice of worker, ``remote.py`` the subworker conversation (and what
becomes of a gone worker's jobs), ``outgoing.py`` what waits to be sent.
"""

from fastworker.dispatcher.actor import Dispatcher as Dispatcher
from fastworker.dispatcher.actor import DispatcherOptions as DispatcherOptions

__all__ = ["Dispatcher", "DispatcherOptions"]

# Shown as fastworker.dispatcher:Dispatcher in logs and snapshots, where it was defined
# before this package was split (actors.topology.kind_name).
Dispatcher.__module__ = __name__
