"""The client: submit tasks and get their results.

``Client`` (async, under asyncio or trio) and ``SyncClient`` (blocking);
``Completed`` is what ``as_completed`` and ``on_complete`` hand over. How
it is built, one job per module:

- ``client``: the public calls, kept thin;
- ``connection``: the address, the secret, one wire per port, and a
  question over it (``ConnectionLost`` when unanswered);
- ``bulk``: many runs of one task at once (``delay_many``, ``map``);
- ``coalescer``: concurrent calls on one port sent in shared frames;
- ``pipeline``: a loop of submissions without a round trip each;
- ``poller``: the watch session that brings results back;
- ``outcome``: what the answers mean (an id, a value, an exception);
- ``slot``: the one-shot answer a waiting caller holds;
- ``sync``: the blocking wrapper.
"""

from fastworker.client.client import Client as Client
from fastworker.client.outcome import Completed as Completed
from fastworker.client.sync import SyncClient as SyncClient

__all__ = ["Client", "Completed", "SyncClient"]
