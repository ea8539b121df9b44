"""Tasks for the result delivery tests: results of a chosen size."""

from __future__ import annotations

from fastworker import task


@task(name="tests.blob")
async def blob(size: int) -> bytes:
    """A result of ``size`` zero bytes."""
    return bytes(size)
