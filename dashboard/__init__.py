"""The dashboard: a Litestar app served from inside the control plane.

``Dashboard`` is the actor (``kind = "dashboard.Dashboard"`` in a topology);
``docs/dashboard.md`` is the tour. It reads every actor's ``GetStats``
snapshot, asks the ResultStore for task pages, and sends actions as
messages; it never reaches into another actor.
"""

from dashboard.actor import Dashboard as Dashboard
from dashboard.actor import DashboardOptions as DashboardOptions

__all__ = ["Dashboard", "DashboardOptions"]
