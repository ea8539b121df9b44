"""A small actor runtime on trio: bounded mailboxes, supervision, topologies
from TOML or Python, and NNG edges. It knows nothing of tasks.

See docs/actors.md for how to write an actor, compose a topology and test
it under injected faults.
"""

from actors.actor import Actor as Actor
from actors.actor import ActorContext as ActorContext
from actors.actor import ActorStats as ActorStats
from actors.actor import GetStats as GetStats
from actors.actor import NoOptions as NoOptions
from actors.codec import Codec as Codec
from actors.edge import Edge as Edge
from actors.edge import EdgeOptions as EdgeOptions
from actors.edge import InboundEdge as InboundEdge
from actors.edge import OutboundEdge as OutboundEdge
from actors.errors import ActorCrashed as ActorCrashed
from actors.errors import ActorError as ActorError
from actors.errors import CallTimeout as CallTimeout
from actors.errors import ConfigError as ConfigError
from actors.errors import Escalation as Escalation
from actors.errors import FrameError as FrameError
from actors.errors import PeerDropped as PeerDropped
from actors.errors import StaleFrame as StaleFrame
from actors.errors import StartError as StartError
from actors.errors import Unanswered as Unanswered
from actors.errors import WiringError as WiringError
from actors.frame import Framer as Framer
from actors.mailbox import Inbox as Inbox
from actors.mailbox import MailboxStats as MailboxStats
from actors.mailbox import Ref as Ref
from actors.mailbox import Reply as Reply
from actors.mailbox import open_mailbox as open_mailbox
from actors.node import Node as Node
from actors.node import open_node as open_node
from actors.node import run_node as run_node
from actors.requester import Requester as Requester
from actors.requests import Answers as Answers
from actors.requests import Requests as Requests
from actors.requests import Unsent as Unsent
from actors.serve import ServeEdge as ServeEdge
from actors.supervisor import RestartPolicy as RestartPolicy
from actors.timers import DueHeap as DueHeap
from actors.timers import Timer as Timer
from actors.topology import Topology as Topology
from actors.topology import register_kind as register_kind
from actors.wire import Received as Received
from actors.wire import Wire as Wire

__all__ = [
    "Actor",
    "ActorContext",
    "ActorCrashed",
    "ActorError",
    "ActorStats",
    "Answers",
    "CallTimeout",
    "Codec",
    "ConfigError",
    "DueHeap",
    "Edge",
    "EdgeOptions",
    "Escalation",
    "FrameError",
    "Framer",
    "GetStats",
    "InboundEdge",
    "Inbox",
    "MailboxStats",
    "NoOptions",
    "Node",
    "OutboundEdge",
    "PeerDropped",
    "Received",
    "Ref",
    "Reply",
    "Requester",
    "Requests",
    "RestartPolicy",
    "ServeEdge",
    "StaleFrame",
    "StartError",
    "Timer",
    "Topology",
    "Unanswered",
    "Unsent",
    "Wire",
    "WiringError",
    "open_mailbox",
    "open_node",
    "register_kind",
    "run_node",
]
