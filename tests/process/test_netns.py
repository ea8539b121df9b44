"""A control plane and a subworker on two "hosts": two network namespaces
joined by a veth pair, so the subworker reaches the control plane over a
real (virtual) link, off loopback, with a shared secret.

The client runs in the control plane's namespace too (the test process
cannot reach it without routing): it is this module run as a script,
``python -m tests.process.test_netns COMMAND``, which prints its findings as
one JSON line (``netns-client: <what> <json>``).

Needs root and iproute2 (``ip netns``); skipped, saying why, where a
namespace cannot be created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.process.harness import ROOT, Running, env, run_process  # noqa: F401 (fixture)

CONTROL = "config/control.toml"
SUB = "config/sub.toml"
TASKS = "examples.tasks,tests.process.netns_tasks"
SUBNET = "10.213.77"  # private to the two namespaces: it cannot clash with the host's
PORT = 25555  # the namespaces are fresh: any port is free there
SECRET = "netns-shared-secret"
HOLDS = 4  # tasks in flight on the subworker when its link is cut
OVERALL = 60  # seconds; the whole test, as a guard against a hang

# "registry: worker vm:21635 registered from tcp://10.213.77.2:60310 (pid 21635 on vm, ..."
_REGISTERED = re.compile(
    r"registry: worker (?P<worker>\S+) registered from (?P<peer>\S+) "
    r"\(pid (?P<pid>\d+) on (?P<host>[^,]+),"
)
_CLIENT = "netns-client: "


# -- the two hosts --------------------------------------------------------------------


@attrs.frozen
class Hosts:
    """Two network namespaces joined by a veth pair: the control plane's
    (``control``, ``SUBNET``.1 on ``control_link``) and the subworker's
    (``sub``, ``SUBNET``.2 on ``sub_link``)."""

    control: str
    sub: str
    control_link: str
    sub_link: str

    @property
    def address(self) -> str:
        """The control plane's base address, on its end of the veth pair."""
        return f"tcp://{SUBNET}.1:{PORT}"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=10, check=False
    )


def _must(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        pytest.fail(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


def _remove_namespace(name: str) -> None:
    """Kill whatever still runs in namespace ``name`` (only processes this
    test started can be there), then delete it, and with it its end of the
    veth pair (the other end goes too)."""
    listed = _ip("netns", "pids", name)
    for pid in listed.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", name)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """The two namespaces, linked and up; always removed afterwards, with
    anything left running in them."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (`ip netns add`)")
    if shutil.which("ip") is None:
        pytest.skip("network namespaces need iproute2 (`ip`), which is not installed")
    pid = os.getpid()
    hosts = Hosts(
        control=f"fwcp-{pid}", sub=f"fwsw-{pid}", control_link=f"fwa{pid}", sub_link=f"fwb{pid}"
    )
    created: list[str] = []
    try:
        for name in (hosts.control, hosts.sub):
            done = _ip("netns", "add", name)
            if done.returncode != 0:
                reason = done.stderr.strip()
                if "File exists" in reason:
                    pytest.fail(f"namespace {name} exists already: {reason}")
                pytest.skip(f"cannot create a network namespace (`ip netns add`): {reason}")
            created.append(name)
        # Each end is created straight in its namespace: nothing appears on the host.
        _must("link", "add", hosts.control_link, "netns", hosts.control, "type", "veth",
              "peer", "name", hosts.sub_link, "netns", hosts.sub)
        for name, link, host in ((hosts.control, hosts.control_link, 1),
                                 (hosts.sub, hosts.sub_link, 2)):
            _must("-n", name, "addr", "add", f"{SUBNET}.{host}/24", "dev", link)
            _must("-n", name, "link", "set", link, "up")
            _must("-n", name, "link", "set", "lo", "up")
        yield hosts
    finally:
        for name in created:
            _remove_namespace(name)


# -- processes in a namespace ---------------------------------------------------------


@asynccontextmanager
async def netns_run(
    namespace: str, args: list[str], label: str, environ: dict[str, str]
) -> AsyncIterator[Running]:
    """Run ``args`` in ``namespace`` (``ip netns exec`` execs it: the pid is
    the program's); kill and reap it on the way out."""
    async with run_process(["ip", "netns", "exec", namespace, *args], environ, label) as running:
        yield running


def fastworker(file: str) -> list[str]:
    return [sys.executable, "-m", "fastworker", "run", file]


async def client_says(client: Running, what: str) -> Any:
    """Wait for the client's ``netns-client: WHAT <json>`` line; its JSON."""
    line = await client.wait_for(f"{_CLIENT}{what} ")
    return json.loads(line.split(f"{_CLIENT}{what} ", 1)[1])


async def run_client(hosts: Hosts, environ: dict[str, str], *args: str) -> Any:
    """Run the client script in the control plane's namespace to its end;
    what it printed last (``result``)."""
    command = [sys.executable, "-m", "tests.process.test_netns", *args]
    async with netns_run(hosts.control, command, f"client {args[0]}", environ) as client:
        result = await client_says(client, "result")
        assert await client.wait_exit() == 0, client.tail
    return result


async def ip(*args: str) -> None:
    with trio.fail_after(10):
        await trio.run_process(["ip", *args], capture_stdout=True, capture_stderr=True)


async def stop(node: Running) -> int:
    """SIGTERM, then the exit code (killed if it is not out within the
    harness's guard: the guard then fails the test)."""
    node.send_signal(signal.SIGTERM)
    return await node.wait_exit()


# -- the test -------------------------------------------------------------------------


async def test_a_subworker_on_another_host_and_a_cut_link(
    hosts: Hosts, env: dict[str, str], tmp_path: Path  # noqa: F811 (fixture)
) -> None:
    """Over a veth pair between two namespaces: signed clients are served by
    the subworker; unsigned or wrongly signed ones get no service; when the
    link is cut with tasks in flight, the control plane declares the
    subworker lost within three heartbeats and runs those tasks again
    itself (no other worker is left), as their second attempt."""
    env["FASTWORKER_ADDRESS"] = hosts.address
    env["FASTWORKER_TASKS"] = TASKS
    signed = {**env, "FASTWORKER_SECRET": SECRET}
    control_env = {**signed, "FASTWORKER_HEARTBEAT": "0.5"}
    gate = tmp_path / "open"  # the filesystem is shared: only the network is not

    with trio.fail_after(OVERALL):
        async with netns_run(hosts.control, fastworker(CONTROL), CONTROL, control_env) as control:
            await control.wait_for("node control ready")
            async with netns_run(hosts.sub, fastworker(SUB), SUB, signed) as sub:
                line = await control.wait_for("registry: worker ")
                registered = _REGISTERED.search(line)
                assert registered, line
                sub_worker, host = registered["worker"], registered["host"]
                sub_pid = int(registered["pid"])
                # Over the veth pair, from the subworker's namespace.
                assert registered["peer"].startswith(f"tcp://{SUBNET}.2:"), line
                assert sub_pid == sub.process.pid
                await sub.wait_for("link: registered with")

                # 1. Signed tasks run on the subworker, once each.
                ran = await run_client(hosts, signed, "where", "6")
                assert ran["values"] == [sub_pid] * 6
                for record in ran["records"]:
                    assert record["state"] == "succeeded"
                    assert record["worker"] == sub_worker
                    assert record["workers"] == [sub_worker]
                    assert record["attempt"] == 1

                # 2. Unsigned or wrongly signed calls get no service, in bounded time.
                refused = await run_client(hosts, env, "unauthorised")
                assert set(refused) == {"none/delay", "none/status", "wrong/delay", "wrong/status"}
                for call, outcome in refused.items():
                    assert outcome["error"] in ("ConnectionLost", "TimeoutError"), (call, outcome)
                    assert outcome["elapsed"] < 5, (call, outcome)
                await control.wait_for(f"dropped frame from tcp://{SUBNET}.1:")

                # 3. Cut the link with HOLDS tasks running on the subworker.
                command = [sys.executable, "-m", "tests.process.test_netns",
                           "cut", str(HOLDS), str(gate)]
                async with netns_run(hosts.control, command, "client cut", signed) as client:
                    running = await client_says(client, "running")
                    assert running == [sub_worker] * HOLDS
                    await ip("-n", hosts.sub, "link", "set", hosts.sub_link, "down")
                    lost = await control.wait_for(f"registry: worker {sub_worker} lost: ")
                    silence = re.search(r"no heartbeat for ([\d.]+) s", lost)
                    assert silence and float(silence[1]) < 3.0, lost  # 3 beats of 0.5 s, judged every 0.25 s
                    gate.touch()  # both copies may finish now; only the second reports
                    after = await client_says(client, "result")
                    assert await client.wait_exit() == 0, client.tail

                control_pid = control.process.pid
                control_worker = f"{host}:{control_pid}"
                assert control_worker != sub_worker
                assert after["values"] == [control_pid] * HOLDS
                for record in after["records"]:
                    assert record["state"] == "succeeded"
                    assert record["attempt"] == 2
                    assert record["workers"] == [sub_worker, control_worker]
                    assert record["worker"] == control_worker
                # New work is still served, by the control plane itself.
                assert after["later"]["value"] == control_pid
                assert after["later"]["record"]["attempt"] == 1

                # 4. Stop: the subworker is cut off, so its drain cannot
                # finish; SIGTERM, seen, then kill.
                sub.send_signal(signal.SIGTERM)
                await sub.wait_for("SIGTERM received")
                sub.process.kill()
                await sub.wait_exit()
            assert await stop(control) == 0, control.tail


# -- the client, run in the control plane's namespace ---------------------------------


def _record(record: Any) -> dict[str, Any]:
    return {
        "state": record.state,
        "attempt": record.attempt,
        "worker": record.worker,
        "workers": list(record.workers),
    }


def _say(what: str, value: Any) -> None:
    print(f"{_CLIENT}{what} {json.dumps(value)}", flush=True)


async def _where(count: int) -> None:
    from fastworker import Client

    async with Client(os.environ["FASTWORKER_ADDRESS"], secret=SECRET) as client:
        ids = [await client.delay("netns.where") for _ in range(count)]
        values = await client.results(ids, timeout=15)
        records = [_record(await client.status(task_id)) for task_id in ids]
    _say("result", {"values": values, "records": records})


async def _unauthorised() -> None:
    """Calls without the secret and with a wrong one: what each raised and
    how long it took."""
    from fastworker import Client

    outcomes: dict[str, dict[str, Any]] = {}

    async def call(label: str, client: Client, what: str) -> None:
        start = trio.current_time()
        try:
            with trio.fail_after(8):
                value: Any = await (
                    client.delay("netns.where") if what == "delay"
                    else client.status("no-such-task")
                )
            outcome: dict[str, Any] = {"error": None, "value": repr(value)}
        except Exception as error:  # what it raised is the finding
            outcome = {"error": type(error).__name__, "message": str(error)}
        outcome["elapsed"] = trio.current_time() - start
        outcomes[f"{label}/{what}"] = outcome

    address = os.environ["FASTWORKER_ADDRESS"]
    def short(secret: str | None) -> Client:
        return Client(address, secret=secret, request_timeout=1.0, queue_wait=0.5, poll_wait=0.5)

    async with short("") as unsigned, short("not-the-secret") as wrong:
        async with trio.open_nursery() as nursery:
            for label, client in (("none", unsigned), ("wrong", wrong)):
                for what in ("delay", "status"):
                    nursery.start_soon(call, label, client, what)
    _say("result", outcomes)


async def _cut(count: int, gate: str) -> None:
    """Hold ``count`` tasks until ``gate`` exists; say once all of them run
    (and where), then wait for their results (the link is cut meanwhile)."""
    from fastworker import Client

    async with Client(os.environ["FASTWORKER_ADDRESS"], secret=SECRET) as client:
        ids = [await client.delay("netns.hold", gate) for _ in range(count)]
        with trio.fail_after(10):
            while True:  # a condition, polled: the records say when all run
                records = [await client.status(task_id) for task_id in ids]
                if all(record.state == "running" for record in records):
                    break
                await trio.sleep(0.02)
        _say("running", [record.worker for record in records])
        values = await client.results(ids, timeout=20)
        records = [await client.status(task_id) for task_id in ids]
        later = await client.delay("netns.where")
        later_value = await client.result(later, timeout=10)
        later_record = await client.status(later)
    _say("result", {
        "values": values,
        "records": [_record(record) for record in records],
        "later": {"value": later_value, "record": _record(later_record)},
    })


def _main(argv: list[str]) -> None:
    command, *args = argv
    if command == "where":
        trio.run(_where, int(args[0]))
    elif command == "unauthorised":
        trio.run(_unauthorised)
    elif command == "cut":
        trio.run(_cut, int(args[0]), args[1])
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
