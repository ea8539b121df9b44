"""The runtime's errors.

    ActorError
    ├── ConfigError (ValueError)     a topology or its options are wrong
    │   └── WiringError              a ref names an actor that is not there
    ├── FrameError (ValueError)      bytes from a wire are not a valid frame
    │   ├── Unanswered               a server could not send its answer (too large)
    │   └── StaleFrame               a server refused a request as a replay or stale
    ├── CallTimeout (TimeoutError)   a call got no reply in time
    ├── NotConnected (TimeoutError)  a request found no server to take it in time (never sent)
    ├── PeerDropped                  a peer took no reply in time; its connection was closed
    ├── ActorCrashed                 the actor crashed while handling a call
    ├── StartError                   an actor failed before it was ready
    └── Escalation                   a supervisor gave up restarting

A send to an actor that has stopped raises trio's own
``trio.BrokenResourceError``; a full mailbox under ``send_nowait`` raises
``trio.WouldBlock``.
"""

from __future__ import annotations

from collections.abc import Iterable


class ActorError(Exception):
    """Base of every error the runtime raises."""


class ConfigError(ActorError, ValueError):
    """Raised when a topology, or an actor's options, cannot be used.

    ``problems`` holds one readable line per problem, each naming the file,
    the key, what was expected and what was found; ``str()`` joins them.
    """

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


class WiringError(ConfigError):
    """Raised when a ref names an actor the topology does not have."""


class FrameError(ActorError, ValueError):
    """Raised when bytes are not a frame we accept: malformed, oversized,
    of an unknown version, or failing authentication."""


class Unanswered(FrameError):
    """Raised to a requester when the server answered with no answers: it
    could not send them in one frame (its log says why); nothing was lost."""


class StaleFrame(FrameError):
    """Raised to a requester when the server refused its request frame as
    stale (another epoch, a sequence already seen, or too old). That frame
    was not handled, but for "already seen" an earlier copy of it was (NNG
    resent identical bytes): a ``Requester`` that restamps and resends makes
    the server see the same messages again, so what goes over a serving
    edge must recognise a repeat (fastworker's do: a Submit's id, a Pull's
    or Report's ``seq``, a Cancel). ``epoch`` is the server's current epoch;
    ``sender`` and ``seq`` echo the refused request's stamp."""

    def __init__(self, epoch: int, sender: int, seq: int) -> None:
        super().__init__(f"request {sender:x}:{seq} refused as stale (server epoch {epoch:x})")
        self.epoch = epoch
        self.sender = sender
        self.seq = seq


class CallTimeout(ActorError, TimeoutError):
    """Raised when a ``Ref.call`` gets no reply before its timeout."""


class NotConnected(ActorError, TimeoutError):
    """Raised when a request wire that has never been connected found no
    server to take a request within its ``connect_timeout``: nothing
    listens there (yet), and the request was not sent."""


class PeerDropped(ActorError):
    """Raised by a wire's send when the peer did not take its frames within
    the wire's bound: the wire closed that peer's connection and freed what
    was queued for it. The message names the peer and the bound."""


class ActorCrashed(ActorError):
    """Raised to a caller when the actor crashed while handling its call."""


class StartError(ActorError):
    """Raised when an actor fails before it reported itself ready."""


class Escalation(ActorError):
    """Raised when a supervisor has restarted too often and gives up."""
