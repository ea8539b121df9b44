"""Clients that do not read their replies, against a real ``fastworker run
config/control.toml`` on free loopback ports: each is dropped (one WARNING
line naming it, ``peers_dropped_slow`` counted), a normal client next to
them is answered within the bound, and the control plane's memory stays
bounded and comes back down.

The slow clients are hand-made req0 connections (a TCP socket with a tiny
receive buffer, never read), so "does not read" is real down to the kernel.
Every wait is on the process (a log line) or on a reply; ``trio.fail_after``
only guards against a hang.
"""

from __future__ import annotations

import functools
import re
import socket
from pathlib import Path

import httpx
import pytest
import trio

from actors.frame import Framer
from actors.nng import open_request_wire
from actors.pytest_plugin import free_tcp_ports
from actors.secret import auto_secret_path, read_secret_file
from actors.testing import RawRequests
from fastworker import Client
from fastworker.messages import CODEC, ResultQuery
from tests.process.harness import control_plane, env  # noqa: F401 (fixture)

CONTROL = "config/control.toml"
MIB = 1024 * 1024
#: Each slow client's reply: far more than the kernel buffers of a connection hold.
RESULT = 6 * MIB
#: Slow clients, and the requests each sends: more than the queries port's
#: contexts (16 here) in all, so that unbounded, they starve everyone else.
SLOW_CLIENTS = 8
ASKS = 3
CONTEXTS = 16
#: The queries port's reply_timeout (FASTWORKER_REPLY_TIMEOUT).
BOUND = 2.0


def vm_rss(pid: int) -> int:
    """A process's resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def ask_and_never_read(port: int, task_id: str, times: int) -> trio.socket.SocketType:
    """Open a req0 connection to ``port`` and ask ``times`` for the result of
    ``task_id`` (a ``ResultQuery`` frame each, signed with the per-host
    secret the control plane made, stamped for the port's epoch with a
    sequence of its own), never reading. The one place this test builds
    frames and SP messages by hand."""
    secret = read_secret_file(auto_secret_path(), auto=True)
    wire = await open_request_wire(f"tcp://127.0.0.1:{port}", recv_max_size=MIB)
    try:
        raw = RawRequests(Framer(CODEC, secret=secret),
                          functools.partial(wire.request, timeout=10))
        await raw.learn_epoch()
    finally:
        await wire.aclose()
    frames = [raw.frame([ResultQuery(ids=(task_id,))]) for _ in range(times)]
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    out = b"\x00SP\x00\x00\x30\x00\x00"  # the req0 handshake
    for number, frame in enumerate(frames, 1):
        body = (0x80000000 | number).to_bytes(4, "big") + frame  # request id, frame
        out += len(body).to_bytes(8, "big") + body
    await sock.send(out)
    return sock


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811 (fixture)
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_TASKS"] = "tests.process.result_tasks"
    env["FASTWORKER_JOURNAL"] = "off"
    env["FASTWORKER_REPLY_TIMEOUT"] = str(BOUND)
    env["FASTWORKER_DASHBOARD"] = "127.0.0.1:0"
    return env


async def dropped_slow_metric(node_lines: list[str], port: str) -> float:
    """``fastworker_peers_dropped_slow_total`` of serving port ``port``, from ``/metrics``."""
    url = next(re.search(r"dashboard at (\S+)", line)[1]  # type: ignore[index]
               for line in node_lines if "dashboard at " in line)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    found = re.search(rf'^fastworker_peers_dropped_slow_total{{port="{port}"}} (\S+)$', text, re.M)
    assert found, text
    return float(found[1])


async def test_clients_that_do_not_read_are_dropped_and_others_answered(
    control_env: dict[str, str], tmp_path: Path,
) -> None:
    text = Path(CONTROL).read_text()
    marker = "port_offset = 4\n"
    assert marker in text
    topology = tmp_path / "control.toml"
    topology.write_text(text.replace(marker, f"{marker}contexts = {CONTEXTS}\n"))
    address = control_env["FASTWORKER_ADDRESS"]
    queries_port = int(address.rpartition(":")[2]) + 4
    async with control_plane(control_env, str(topology)) as node, \
            Client(address, request_timeout=10) as client:
        pid = node.process.pid
        with trio.fail_after(60):
            big = await client.delay("tests.blob", RESULT)
            assert len(await client.result(big)) == RESULT
            before = vm_rss(pid)
            slow = [await ask_and_never_read(queries_port, big, ASKS)
                    for _ in range(SLOW_CLIENTS)]
            try:
                ports = {sock.getsockname()[1] for sock in slow}
                # A normal client is answered within the bound, not after
                # the slow ones are gone.
                started = trio.current_time()
                small = await client.delay("tests.blob", 10)
                assert await client.result(small) == bytes(10)
                assert len(await client.result(big)) == RESULT
                assert trio.current_time() - started < BOUND + 3
                peak = vm_rss(pid)
                dropped = set()
                while len(dropped) < SLOW_CLIENTS:
                    line = await node.wait_for("dropped peer tcp://127.0.0.1:")
                    assert "WARNING" in line and f"within {BOUND:g} s" in line, line
                    port = int(line.partition("dropped peer tcp://127.0.0.1:")[2].split(":")[0])
                    assert port in ports, line
                    dropped.add(port)
                    peak = max(peak, vm_rss(pid))
            finally:
                for sock in slow:
                    sock.close()
            # Bounded: per slow client, the reply being written and the one
            # queued behind it (NNG's copy and ours), not all it asked for.
            assert peak - before < SLOW_CLIENTS * 3 * RESULT + 64 * MIB, (before, peak)
            # The dashboard samples once a second: wait for the count to show.
            while await dropped_slow_metric(node.lines, "queries") < SLOW_CLIENTS:
                await trio.sleep(0.2)  # polls the next sample; there is no event to wait on
            assert await dropped_slow_metric(node.lines, "queries") == SLOW_CLIENTS
            # Its memory is freed: back near where it was.
            after = vm_rss(pid)
            assert after - before < 2 * RESULT + 32 * MIB, (before, peak, after)
            assert await client.result(small) == bytes(10)
