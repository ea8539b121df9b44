"""Scaling out with real processes: a control plane and subworkers, each a
``fastworker run`` on free loopback ports, and what happens when a
subworker dies, drains, or outlives its control plane.

The ``tests.hold`` tasks report to a gate in this test when they start and
wait for it to open, so the tests know which worker holds what without
polling."""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from actors.pytest_plugin import free_tcp_ports
from fastworker import Client, TaskError
from tests.process.harness import Running, env, fastworker_run, run_to_exit  # noqa: F401 (fixture)

CONTROL = "config/control.toml"
SUB = "config/sub.toml"
WORKER_TASKS = "examples.tasks,tests.process.worker_tasks"
_REGISTERED = re.compile(r"worker (\S+) registered from")


class Gate:
    """Where ``tests.hold`` tasks say they started; ``open`` lets them (and
    every later one) finish."""

    def __init__(self) -> None:
        self.port = 0
        self.started: list[tuple[int, str]] = []  # (pid, label) in arrival order
        self._streams: list[trio.SocketStream] = []
        self._open = False
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        line = b""
        while not line.endswith(b"\n"):
            chunk = await stream.receive_some()
            if not chunk:
                return
            line += chunk
        pid, label = line.decode().split()
        self.started.append((int(pid), label))
        self._changed.set()
        if self._open:
            await stream.send_all(b"!")
        else:
            self._streams.append(stream)
        await stream.receive_some()  # held until the task (or its worker) ends

    async def wait_started(self, count: int) -> None:
        """Wait until ``count`` holds have started in all."""
        with trio.fail_after(20):
            while len(self.started) < count:
                self._changed = trio.Event()
                await self._changed.wait()

    async def open(self) -> None:
        self._open = True
        streams, self._streams = self._streams, []
        for stream in streams:
            try:
                await stream.send_all(b"!")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # its worker is gone


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_TASKS"] = WORKER_TASKS
    env["FASTWORKER_HEARTBEAT"] = "0.25"  # lost after 0.75 s of silence
    return env


class Fleet:
    """A control plane and its subworkers, all stopped on the way out."""

    def __init__(self, stack: AsyncExitStack, control_env: dict[str, str], gate: Gate) -> None:
        self._stack = stack
        self.gate = gate
        self.env = control_env
        self.address = control_env["FASTWORKER_ADDRESS"]
        self.control: Running | None = None

    async def start_control(self, **settings: str) -> Running:
        node = await self._stack.enter_async_context(
            fastworker_run(CONTROL, {**self.env, **settings}))
        await node.wait_for("node control ready")
        self.control = node
        return node

    async def start_sub(self, *, concurrency: int = 256, **settings: str) -> Running:
        """A subworker, once the control plane has it registered and it has
        offered its slots; ``worker`` is its id."""
        environ = {**self.env, "FASTWORKER_CONCURRENCY": str(concurrency), **settings}
        sub = await self._stack.enter_async_context(fastworker_run(SUB, environ))
        await sub.wait_for("offered")
        return sub

    async def start_registered_sub(self, **settings: str) -> tuple[Running, str]:
        """A subworker, and its id as the control plane registered it."""
        assert self.control is not None
        sub = await self.start_sub(**settings)
        return sub, await registered(self.control)


@asynccontextmanager
async def fleet(control_env: dict[str, str], gate_type: type[Gate] | None = None
                ) -> AsyncIterator[Fleet]:
    """A fleet to start processes in, and a gate (a ``Gate``, or a
    ``gate_type``) for its ``tests.hold`` tasks."""
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        gate = Gate() if gate_type is None else gate_type()
        await nursery.start(gate.serve)
        try:
            yield Fleet(stack, control_env, gate)
        finally:
            nursery.cancel_scope.cancel()


async def registered(control: Running) -> str:
    """The id of the next worker the control plane registers."""
    line = await control.wait_for("registered from")
    found = _REGISTERED.search(line)
    assert found, line
    return found[1]


def pid_of(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1])


async def test_tasks_spread_across_two_subworkers_by_free_slots(
    control_env: dict[str, str],
) -> None:
    """Two subworkers with 8 slots each: 8 held tasks go 4 and 4 (the one
    with more free slots gets the next), and none to the control plane's
    own executor while subworkers can run them."""
    async with fleet(control_env) as f:
        gate = f.gate
        control = await f.start_control()
        first = await f.start_sub(concurrency=8)
        second = await f.start_sub(concurrency=8)
        async with Client(f.address) as client:
            ids = [await client.delay("tests.hold", gate.port, f"t{n}") for n in range(8)]
            await gate.wait_started(8)
            by_pid = Counter(pid for pid, _ in gate.started)
            assert by_pid == {first.process.pid: 4, second.process.pid: 4}
            await gate.open()
            pids = await client.results(ids, timeout=10)
        assert Counter(pids) == by_pid
        assert control.process.pid not in pids


async def test_a_subworker_and_a_client_without_an_address_find_the_control_plane(
    control_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no FASTWORKER_ADDRESS, a subworker finds the control plane by
    its discovery beacon and runs its tasks; so does a client asked to."""
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as probe:
        await probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    monkeypatch.delenv("FASTWORKER_ADDRESS", raising=False)
    monkeypatch.setenv("FASTWORKER_DISCOVERY_PORT", port)
    async with fleet(control_env) as f:
        await f.start_control(FASTWORKER_DISCOVERY_PORT=port)
        sub = await f.start_sub(FASTWORKER_ADDRESS="", FASTWORKER_DISCOVERY_PORT=port)
        assert "found control plane" in sub.output
        async with Client(discover=5.0) as client:
            assert client.address == f.address
            assert await client.submit("tests.pid") == sub.process.pid


async def test_tasks_of_a_killed_subworker_are_redelivered_and_stored_once(
    control_env: dict[str, str],
) -> None:
    """SIGKILL a subworker holding 100 tasks: the control plane declares it
    lost, the other subworker runs all 100 again as attempt 2, and each
    task has one result, with both workers in its record."""
    async with fleet(control_env) as f:
        gate = f.gate
        control = await f.start_control()
        doomed, doomed_id = await f.start_registered_sub()
        async with Client(f.address) as client:
            ids = [await client.delay("tests.hold", gate.port, f"t{n}") for n in range(100)]
            await gate.wait_started(100)
            assert {pid for pid, _ in gate.started} == {doomed.process.pid}
            survivor, survivor_id = await f.start_registered_sub()
            assert await doomed.stop(signal.SIGKILL) == -signal.SIGKILL
            await control.wait_for(f"worker {doomed_id} lost")
            line = await control.wait_for(f"worker {doomed_id} was lost")
            assert "WARNING" in line and ("100 of the tasks it was running queued again as their "
                                          "next attempt, 0 failed (none)") in line, line
            await gate.open()
            assert await client.results(ids, timeout=20) == [survivor.process.pid] * 100
            records = [await client.status(task_id) for task_id in ids]
        assert {(r.state, r.attempt, r.workers) for r in records} == {
            ("succeeded", 2, (doomed_id, survivor_id))
        }
        assert sorted(label for pid, label in gate.started if pid == survivor.process.pid) == (
            sorted(f"t{n}" for n in range(100)))


async def test_an_at_most_once_task_is_failed_not_rerun(control_env: dict[str, str]) -> None:
    """When its worker dies, an at-most-once task fails with WorkerLost and
    is not started again; an ordinary task beside it is redelivered."""
    async with fleet(control_env) as f:
        gate = f.gate
        control = await f.start_control()
        doomed, doomed_id = await f.start_registered_sub()
        async with Client(f.address) as client:
            once = await client.delay("tests.hold_once", gate.port, "once")
            again = await client.delay("tests.hold", gate.port, "again")
            await gate.wait_started(2)
            survivor = await f.start_sub()
            await doomed.stop(signal.SIGKILL)
            await control.wait_for(f"worker {doomed_id} lost")
            line = await control.wait_for(f"worker {doomed_id} was lost")
            assert "1 of the tasks it was running queued again" in line, line
            assert "1 failed (WorkerLost)" in line and once in line and again in line, line
            await gate.open()
            assert await client.result(again, timeout=10) == survivor.process.pid
            with pytest.raises(TaskError) as raised:
                await client.result(once, timeout=10)
        assert raised.value.remote_type == "WorkerLost"
        assert "not run again" in raised.value.message
        assert [label for _, label in gate.started].count("once") == 1


async def test_a_poison_task_is_failed_after_killing_its_limit_of_workers(
    control_env: dict[str, str],
) -> None:
    """A task that kills every worker it runs on (sync tasks on threads,
    the opt-in: FASTWORKER_ISOLATION=thread) is failed as PoisonTask after
    three lost workers, and the fleet's fourth worker survives. (In a pool
    process, the default, it kills no worker: see test_isolation.)"""
    # The control plane lacks the poison: its own executor never runs it.
    async with fleet(control_env) as f:
        control = await f.start_control(FASTWORKER_TASKS="examples.tasks")
        subs = [await f.start_sub(concurrency=1, FASTWORKER_ISOLATION="thread")
                for _ in range(4)]
        async with Client(f.address) as client:
            with pytest.raises(TaskError) as raised:
                await client.submit("tests.kill_worker")
            assert raised.value.remote_type == "PoisonTask"
            assert "held by 3 workers that were lost" in raised.value.message
            assert await client.submit("tests.pid") in {s.process.pid for s in subs}
        dead = [s for s in subs if s.process.poll() is not None]
        assert [s.process.returncode for s in dead] == [-signal.SIGKILL] * 3
        for _ in range(3):
            await control.wait_for(" lost: ")


async def test_sigterm_drains_a_subworker(control_env: dict[str, str]) -> None:
    """SIGTERM: the subworker takes nothing new (a task submitted now runs
    elsewhere), finishes what it holds, reports it, deregisters, exits 0;
    nothing is redelivered."""
    async with fleet(control_env) as f:
        gate = f.gate
        control = await f.start_control()
        sub, sub_id = await f.start_registered_sub()
        async with Client(f.address) as client:
            ids = [await client.delay("tests.hold", gate.port, f"t{n}") for n in range(5)]
            await gate.wait_started(5)
            sub.send_signal(signal.SIGTERM)
            await sub.wait_for("draining")
            # No live subworker can take it: the control plane runs it itself.
            assert await client.submit("tests.pid") == control.process.pid
            await gate.open()
            assert await sub.wait_exit() == 0
            assert await client.results(ids, timeout=10) == [sub.process.pid] * 5, (
                sub.output + "\n----\n" + control.tail)
            records = [await client.status(task_id) for task_id in ids]
        assert {(r.attempt, r.workers) for r in records} == {(1, (sub_id,))}
        assert "deregistered" in sub.output
        await control.wait_for(f"worker {sub_id} left: deregistered")
        assert " lost: " not in control.output


async def test_sigterm_gives_back_the_jobs_a_subworker_has_not_started(
    control_env: dict[str, str],
) -> None:
    """SIGTERM on a subworker with one slot busy and jobs prefetched behind
    it: those go back to the control plane at once and start on another
    worker, with the same attempt, while the job it runs still holds it;
    then that one ends, is reported, and the subworker exits 0."""
    control_env["FASTWORKER_LOCAL"] = "never"  # only subworkers run the holds
    async with fleet(control_env) as f:
        gate = f.gate
        await f.start_control()
        first = await f.start_sub(concurrency=1)
        async with Client(f.address) as client:
            ids = [await client.delay("tests.hold", gate.port, f"t{n}") for n in range(3)]
            await gate.wait_started(1)
            # It holds all three (one slot, prefetch 16); the second is there
            # before the first gives back (else the control plane, the only
            # worker left, would take them).
            second = await f.start_sub(concurrency=2)
            first.send_signal(signal.SIGTERM)
            await first.wait_for("draining")
            # The gate is still closed: the first subworker's job still runs.
            await gate.wait_started(3)
            started_on = [pid for pid, _ in gate.started]
            await gate.open()
            assert await first.wait_exit() == 0, first.output
            results = await client.results(ids, timeout=10)
            records = [await client.status(task_id) for task_id in ids]
    assert started_on == [first.process.pid, second.process.pid, second.process.pid]
    assert Counter(results) == {first.process.pid: 1, second.process.pid: 2}
    assert {(r.attempt, r.duplicate_runs) for r in records} == {(1, 0)}
    assert "gave back" in first.output and "deregistered" in first.output


async def test_subworkers_register_again_with_a_restarted_control_plane(
    control_env: dict[str, str],
) -> None:
    """Kill the control plane and start a new one on the same address: the
    subworker registers with it on its own and runs its tasks."""
    async with fleet(control_env) as f:
        first = await f.start_control()
        sub = await f.start_sub()
        async with Client(f.address) as client:
            assert await client.submit("tests.pid") == sub.process.pid
        await first.stop(signal.SIGKILL)
        second = await f.start_control()
        await registered(second)
        await sub.wait_for("registering again")
        async with Client(f.address) as client:
            assert await client.submit("tests.pid") == sub.process.pid


async def test_a_subworker_with_no_address_and_no_discovery_is_a_config_error(
    env: dict[str, str],
) -> None:
    """No address and discovery turned off: exit 2 with the reason, at --check."""
    env.update(FASTWORKER_ADDRESS="", FASTWORKER_DISCOVERY_PORT="0")
    done = await run_to_exit(SUB, "--check", env=env)
    assert done.returncode == 2
    assert "no address and discovery is off" in done.stderr.decode()


async def test_a_subworker_whose_control_plane_is_gone_stops_soon_on_sigterm(
    control_env: dict[str, str],
) -> None:
    """SIGTERM on a subworker whose control plane was killed: it does not
    wait its shutdown deadline (30 s) for a drain nobody answers, but stops
    once the control plane has been silent for two heartbeats, and says so."""
    async with fleet(control_env) as f:
        control = await f.start_control()
        sub, _ = await f.start_registered_sub()
        assert await control.stop(signal.SIGKILL) == -signal.SIGKILL
        assert await sub.stop() == 0, sub.tail  # within the harness's guard (10 s)
    assert any("has answered nothing for" in line and "stopping without it" in line
               for line in sub.lines), sub.tail
    assert not any("shutdown deadline" in line for line in sub.lines), sub.tail
