"""Freshness: a request frame is handled once, also across a server restart.

A request frame to a ``ServeEdge`` carries a stamp (``actors.frame``): the
epoch of the server it is meant for, the sender's id and the sender's
sequence number, signed with the rest of the frame. Two halves live here:

- ``ReplayWindow``, on the serving end, picks a random epoch when it is
  made (so at every start of the process) and remembers, per sender, the
  highest sequence seen and which of the ``WINDOW`` before it were seen.
  A frame for another epoch, a sequence already seen or one older than the
  window is refused. The table of senders is bounded: when it is full, the
  window starts a new epoch and forgets every sender, which stays airtight
  (a frame stamped for the old epoch is refused) at the cost of one round
  trip per sender to learn the new epoch.
- ``Stamper``, on the requesting end, holds a random sender id, the next
  sequence and the epoch last learnt from a refusal.

No clock is read: hosts whose clocks disagree work alike. This module does
no IO and knows nothing of messages; ``actors.edge`` and
``actors.requester`` use it.
"""

from __future__ import annotations

import secrets
from typing import Final, final

from actors.frame import Stamp

__all__ = ["DEFAULT_MAX_SENDERS", "ReplayWindow", "Stamper", "WINDOW", "new_epoch"]

#: How far below a sender's highest sequence a frame may arrive (reordered
#: across the contexts of one request wire) and still be accepted once.
WINDOW: Final = 1024
#: Senders a window remembers before it starts a new epoch.
DEFAULT_MAX_SENDERS: Final = 4096

_MASK: Final = (1 << WINDOW) - 1


def new_epoch(other_than: int = 0) -> int:
    """A random, non-zero 64-bit epoch, different from ``other_than``
    (0 is a sender's "no epoch learnt yet")."""
    while True:
        epoch = secrets.randbits(64)
        if epoch and epoch != other_than:
            return epoch


@final
class ReplayWindow:
    """Which stamped frames a serving end has seen in its current epoch.

    Args:
        max_senders: the most senders remembered; one more starts a new epoch.
        epoch: the epoch to start with; random unless given (tests).
    """

    __slots__ = ("epoch", "max_senders", "rotations", "_senders")

    def __init__(self, *, max_senders: int = DEFAULT_MAX_SENDERS, epoch: int | None = None) -> None:
        if max_senders < 1:
            raise ValueError(f"max_senders must be at least 1, got {max_senders}")
        self.epoch = epoch if epoch is not None else new_epoch()
        self.max_senders = max_senders
        #: How many times the table overflowed and a new epoch began.
        self.rotations = 0
        # sender -> [highest sequence seen, bitmap: bit i set = highest - i seen]
        self._senders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._senders)

    def check(self, stamp: Stamp) -> str | None:
        """Accept ``stamp`` once: ``None`` if it is fresh (it is now seen),
        else why it is refused, in a few words ("sequence already seen")."""
        epoch, sender, seq = stamp
        if epoch != self.epoch:
            return "stamped for another epoch" if epoch else "no epoch learnt yet"
        state = self._senders.get(sender)
        if state is None:
            if len(self._senders) >= self.max_senders:
                self.rotate()
                return f"table of {self.max_senders} senders full: new epoch"
            self._senders[sender] = [seq, 1]
            return None
        highest, seen = state
        if seq > highest:
            shift = seq - highest
            state[0] = seq
            state[1] = ((seen << shift) | 1) & _MASK if shift < WINDOW else 1
            return None
        offset = highest - seq
        if offset >= WINDOW:
            return f"sequence older than the window of {WINDOW}"
        bit = 1 << offset
        if seen & bit:
            return "sequence already seen"
        state[1] = seen | bit
        return None

    def rotate(self) -> None:
        """Start a new epoch and forget every sender."""
        self.epoch = new_epoch(self.epoch)
        self._senders.clear()
        self.rotations += 1


@final
class Stamper:
    """A requesting end's stamps: one random sender id, a sequence that
    only grows, and the server's epoch as last learnt (0 until then, which
    the server refuses, telling its epoch)."""

    __slots__ = ("epoch", "sender", "_seq")

    def __init__(self) -> None:
        self.sender: Final = secrets.randbits(64)
        self.epoch = 0
        self._seq = 0

    def next(self) -> Stamp:
        """The stamp for the next request frame."""
        self._seq += 1
        return (self.epoch, self.sender, self._seq)

    def learn(self, epoch: int) -> None:
        """Stamp later frames for ``epoch`` (from a refusal)."""
        self.epoch = epoch
