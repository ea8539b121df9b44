"""What the dashboard's API answers with a 4xx or 5xx."""

from __future__ import annotations

__all__ = ["ActionError"]


class ActionError(Exception):
    """An action or lookup the API answers with a 4xx: ``status`` and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
