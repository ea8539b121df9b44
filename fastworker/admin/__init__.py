"""The ``Admin`` actor: the cluster's state and the operator's bulk actions
(``fastworker status``, ``workers``, ``purge``, ``retry``, ``drain``, the
dashboard's bulk actions)."""

from fastworker.admin.actor import Admin as Admin
from fastworker.admin.actor import AdminOptions as AdminOptions

__all__ = ["Admin", "AdminOptions"]
