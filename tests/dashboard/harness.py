"""The shipped control plane, in process, with its dashboard on a port it
chose (it listens on port 0 and says which port it got)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from actors import Node, Topology, open_node
from actors.pytest_plugin import free_tcp_ports
from fastworker import Client, TaskError

#: Seconds a test waits for something before it fails instead of hanging.
PATIENCE = 15.0


@attrs.define
class Control:
    node: Node
    client: Client
    http: httpx.AsyncClient
    url: str
    address: str

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

    async def settle(self, *ids: str) -> None:
        """Wait until each task has ended, however it ended."""
        for task_id in ids:
            try:
                await self.client.result(task_id, timeout=PATIENCE)
            except TaskError:
                pass

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()


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
            yield Control(node, client, http, url, address)
