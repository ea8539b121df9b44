"""An actor that never finishes a graceful stop, for ``test_run.py``.

Named in a topology as ``kind = "tests.process.stuck:Stuck"``: its ``drain``
logs one line and then blocks until it is cancelled, so only a second
signal (or the shutdown deadline) ends the node.
"""

from __future__ import annotations

import logging

import trio

from actors import Actor

log = logging.getLogger("tests.process.stuck")


class Stuck(Actor[object]):
    """Takes no messages; its drain waits forever."""

    async def drain(self) -> None:
        log.info("%s is draining forever", self.name)
        await trio.sleep_forever()
