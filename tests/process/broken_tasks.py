"""A task module that fails to import (for the start-up error test)."""

from fastworker import task


@task
def fine() -> None:
    """Never reached: the module fails below."""


SETTINGS = {"retries": 3}["retires"]
