"""The shipped control plane, in process, with its dashboard on a port it
chose (it listens on port 0 and says which port it got); and a node of
stand-ins, actors that answer ``GetStats`` with snapshots a test chose, so
that what the dashboard shows can be checked figure by figure."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from actors import Actor, Node, NoOptions, Topology, open_node
from actors.pytest_plugin import free_tcp_ports
from dashboard.actor import Dashboard
from fastworker import Client, TaskError
from fastworker.stats import (
    DispatcherStats,
    ExecutorStats,
    RegistryStats,
    WorkerInfo,
    WorkerLoad,
)

#: Seconds a test waits for something before it fails instead of hanging.
PATIENCE = 15.0


@attrs.define
class Dash:
    """A node with its dashboard, and an HTTP client for it."""

    node: Node
    http: httpx.AsyncClient
    url: str

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first snapshot of the event stream for which ``predicate`` holds."""
        with trio.fail_after(PATIENCE):
            async with aclosing(self.events()) as events:
                async for snapshot in events:
                    if predicate(snapshot):
                        return snapshot
        raise AssertionError("the event stream ended")

    async def events(self, token: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The snapshots of ``/api/events``, as they come (read over a plain
        HTTP/1.0 socket, so that nothing buffers or chunks them)."""
        host, _, port = self.url.removeprefix("http://").partition(":")
        path = "/api/events" + (f"?token={token}" if token else "")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some()
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"), head
            assert b"text/event-stream" in head.lower(), head
            while True:
                while b"\r\n\r\n" not in buffer and b"\n\n" not in buffer:
                    data = await stream.receive_some()
                    if not data:
                        return
                    buffer += data
                buffer = buffer.replace(b"\r\n", b"\n")
                message, _, buffer = buffer.partition(b"\n\n")
                fields = dict(line.decode().partition(":")[::2] for line in message.split(b"\n"))
                if fields.get("event", "").strip() == "snapshot":
                    yield json.loads(fields["data"])

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()


@attrs.define
class Control(Dash):
    """The shipped control plane, a client of it, and its dashboard."""

    client: Client
    address: str

    async def settle(self, *ids: str) -> None:
        """Wait until each task has ended, however it ended."""
        for task_id in ids:
            try:
                await self.client.result(task_id, timeout=PATIENCE)
            except TaskError:
                pass


@asynccontextmanager
async def open_control(
    *, dashboard: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
    journal: str | None = None,
) -> AsyncIterator[Control]:
    """config/control.toml, sync tasks on threads, with the dashboard on
    127.0.0.1 and a port of its choosing (port 0: nothing to pick, nothing to race), sampling every
    50 ms (``dashboard`` overrides its options); with ``journal``, a
    Journal on that file that the store and the scheduler write to (unless
    config/control.toml has one already)."""
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env = {
        "FASTWORKER_ADDRESS": address,
        "FASTWORKER_TASKS": "examples.tasks,tests.dashboard.dash_tasks",
        "FASTWORKER_DISCOVERY_PORT": "0",
        "FASTWORKER_DASHBOARD": "127.0.0.1:0",
        "FASTWORKER_JOURNAL": os.environ.get("FASTWORKER_JOURNAL", "off"),
        # Sync tasks on threads: the node runs in this process, and the
        # tests' sync tasks share state with the test. The shipped default
        # (a process pool) is tested with real processes (test_isolation).
        "FASTWORKER_ISOLATION": "thread",
        **(environ or {}),
    }
    topology = Topology.from_toml("config/control.toml", environ=env)
    for spec in topology.actors:
        if spec.name == "dashboard":
            spec.options.update({"sample_interval": 0.05, **(dashboard or {})})
    if journal is not None:
        if any(spec.name == "journal" for spec in topology.actors):
            [spec] = [spec for spec in topology.actors if spec.name == "journal"]
            spec.options["path"] = journal
        else:
            topology.add("journal", "fastworker.Journal", path=journal)
            topology.actors = [
                attrs.evolve(spec, refs={**spec.refs, "journal": "journal"})
                if spec.name in ("results", "scheduler") else spec
                for spec in topology.actors
            ]
    async with open_node(topology) as node:
        ready = node.ready["dashboard"] or ""
        url = "" if ready == "off" else ready.partition(",")[0]
        async with Client(address, request_timeout=5) as client, httpx.AsyncClient(
            base_url=url, timeout=PATIENCE
        ) as http:
            yield Control(node=node, http=http, url=url, client=client, address=address)


# -- a node of stand-ins -------------------------------------------------------

#: What each stand-in answers ``GetStats`` with (its ``detail``), by actor name.
SNAPSHOTS: dict[str, Any] = {}


class StandIn(Actor[NoOptions]):
    """An actor that only answers ``GetStats``, with ``SNAPSHOTS[name]``:
    the dashboard shows exactly the figures a test chose."""

    def stats_detail(self) -> Any:
        return SNAPSHOTS.get(self.name)

    async def handle(self, message: Any) -> Any:
        return None


@asynccontextmanager
async def open_stand_ins(snapshots: dict[str, Any]) -> AsyncIterator[Dash]:
    """The dashboard (on 127.0.0.1, a port of its choosing, sampling every
    50 ms) in a node whose other actors are stand-ins, one per entry of
    ``snapshots``, each answering with its snapshot."""
    SNAPSHOTS.clear()
    SNAPSHOTS.update(snapshots)
    topology = Topology(name="stand-ins")
    for name in snapshots:
        topology.add(name, StandIn)
    refs = {"inbox": "stand-in", "results": "stand-in", "dispatcher": "stand-in"}
    topology.add("stand-in", StandIn)
    topology.add("dashboard", Dashboard, refs=refs, address="127.0.0.1:0",
                 sample_interval=0.05)
    async with open_node(topology) as node:
        url = (node.ready["dashboard"] or "").partition(",")[0]
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
            yield Dash(node=node, http=http, url=url)


def loaded_workers() -> dict[str, Any]:
    """Stand-in snapshots of a busy control plane: its executor ``cp``
    (async 256 slots, thread 8, process 4, prefetch 2) runs 1 async, 8
    thread and 2 process jobs, with 2 thread jobs prefetched; subworker
    ``sub-1`` holds 9 jobs (7 running, 2 prefetched) of at most 66 async,
    10 thread, 10 process; ``sub-2`` is lost."""
    executor = ExecutorStats(
        worker="cp", concurrency=256, in_flight=13, threads=8, succeeded_total=5,
        failed_total=1, timed_out_total=0, late_results_discarded=0, processes=4,
        slots=(256, 8, 4), running=(1, 8, 2), waiting=(0, 2, 0), prefetch=(2, 2, 2))
    dispatcher = DispatcherStats(
        workers=(
            WorkerLoad(worker="cp", local=True, health="alive", credit=261, held=0,
                       assigned_total=40, running=0, credit_by_kind=(257, 0, 4)),
            WorkerLoad(worker="sub-1", local=False, health="alive", credit=77, held=9,
                       assigned_total=30, running=7, credit_by_kind=(66, 1, 10),
                       prefetch=(2, 2, 2)),
        ),
        held=0, asked=0, assigned_total=70, batches_total=9, redelivered_total=0,
        failed_lost_total=0, late_results_total=0)
    info = dict(host="h1", pid=42, tasks=("examples.tasks.add",), peer="tcp://10.0.0.2:1",
                registered_at=900.0, last_seen_at=999.0, silent_for=0.5, in_flight=9,
                succeeded_total=3, failed_total=0)
    registry = RegistryStats(
        workers=(
            WorkerInfo(worker="sub-1", slots=(64, 8, 8), health="alive", **info),
            WorkerInfo(worker="sub-2", slots=(6, 10, 10), health="lost", gone_at=990.0,
                       reason="no heartbeat for 5 s", **info),
        ),
        registered_total=2, lost_total=1, left_total=0)
    return {"executor": executor, "dispatcher": dispatcher, "registry": registry}
