"""The PriorityInbox: where accepted tasks wait for a worker (see ``docs/inbox.md``)."""

from fastworker.inbox.actor import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from fastworker.inbox.actor import DEFAULT_PARKED_MAX as DEFAULT_PARKED_MAX
from fastworker.inbox.actor import DEFAULT_RECENT_IDS as DEFAULT_RECENT_IDS
from fastworker.inbox.actor import DEFAULT_STARVATION_LIMIT as DEFAULT_STARVATION_LIMIT
from fastworker.inbox.actor import InboxOptions as InboxOptions
from fastworker.inbox.actor import PriorityInbox as PriorityInbox

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_PARKED_MAX",
    "DEFAULT_RECENT_IDS",
    "DEFAULT_STARVATION_LIMIT",
    "InboxOptions",
    "PriorityInbox",
]

# Shown as fastworker.inbox:PriorityInbox in logs and snapshots, where it was defined
# before this package was split (actors.topology.kind_name).
PriorityInbox.__module__ = __name__
