"""The shipped control plane composition, in process, under an injected crash."""

from __future__ import annotations

import os

import pytest
import trio

from actors import Topology, open_node
from actors.pytest_plugin import free_tcp_ports
from actors.testing import crash_after
from actors.topology import ActorSpec, resolve_kind
from examples import tasks
from fastworker import Client


@pytest.mark.parametrize("crashing", ["dispatcher", "inbox", "executor", "results"])
async def test_the_control_plane_serves_again_after_any_core_actor_crashes(
    crashing: str,
) -> None:
    """A crash of any core actor restarts the core together (one_for_all), so
    credit, demand and queues agree again and new tasks run: never a stall."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    topology = Topology.from_toml(
        "config/control.toml",
        environ={"FASTWORKER_ADDRESS": address, "FASTWORKER_TASKS": "examples.tasks",
                 "FASTWORKER_DISCOVERY_PORT": "0",
                 # Not the well-known 8080: a free port the dashboard picks itself.
                 "FASTWORKER_DASHBOARD": "127.0.0.1:0",
                 "FASTWORKER_JOURNAL": os.environ["FASTWORKER_JOURNAL"]},
    )
    assert topology.node.supervision.strategy == "one_for_all"
    for index, spec in enumerate(topology.actors):
        if spec.name == crashing:
            topology.actors[index] = ActorSpec(
                name=spec.name,
                kind=crash_after(resolve_kind(spec.kind), 2),
                options=spec.options,
                refs=spec.refs,
                mailbox=spec.mailbox,
            )
    async with open_node(topology) as node, Client(address, request_timeout=5) as client:
        for n in range(6):
            with trio.move_on_after(3):
                await client.submit(tasks.add, n, n)  # some are lost in the crash
        with trio.fail_after(10):
            assert await client.submit(tasks.add, 20, 22) == 42
        stats = await node.stats()
    assert stats[crashing].restarts == 1
