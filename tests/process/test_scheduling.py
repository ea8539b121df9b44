"""Where a task starts, with real processes: a worker takes only what it
can start now plus a small prefetch, so priority decides at the start, an
idle newcomer gets the queue at once, and what a worker holds unstarted
comes back when it is drained or lost.

The ``tests.hold`` tasks report to the test's gate when they start and run
until it opens (``tests/process/test_subworkers.py``), so the tests see the
order in which tasks started without polling. Each worker here has a
prefetch of 1 (``FASTWORKER_PREFETCH``) but one that keeps the shipped
default, which follows the start rate; the priority cases use sync tasks
on its 8 worker threads, the others async tasks on 4 lanes
(``FASTWORKER_CONCURRENCY``).
"""

from __future__ import annotations

import signal

import httpx

from actors.pytest_plugin import free_tcp_ports
from fastworker import Client
from tests.process.harness import env  # noqa: F401 (fixture)
from tests.process.test_subworkers import Fleet, control_env, fleet  # noqa: F401

SLOTS = 4
PREFETCH = 1
SMALL = {"FASTWORKER_CONCURRENCY": str(SLOTS), "FASTWORKER_PREFETCH": str(PREFETCH)}
#: The worker threads of an executor (``threads`` in the shipped configs).
THREADS = 8


async def saturate(f: Fleet, client: Client, prefix: str, n: int = SLOTS,
                   task: str = "tests.hold") -> list[str]:
    """``n`` held low-priority tasks, once all have started."""
    before = len(f.gate.started)
    ids = [await client.delay(task, f.gate.port, f"{prefix}{i}", priority="low")
           for i in range(n)]
    await f.gate.wait_started(before + n)
    return ids


async def priority_case(f: Fleet, client: Client) -> list[str]:
    """Every worker thread busy, 20 low sync tasks queued, then 5 critical
    ones: the labels of what started after the busy ones, in order."""
    task = "tests.hold_thread"
    busy = await saturate(f, client, "busy", THREADS, task)
    low = [await client.delay(task, f.gate.port, f"low{i}", priority="low") for i in range(20)]
    critical = [await client.delay(task, f.gate.port, f"crit{i}", priority="critical")
                for i in range(5)]
    await f.gate.open()
    await client.results(busy + low + critical, timeout=30)
    return [label for _, label in f.gate.started if not label.startswith("busy")]


def lows_before_last_critical(order: list[str]) -> int:
    last = max(i for i, label in enumerate(order) if label.startswith("crit"))
    return sum(label.startswith("low") for label in order[:last])


async def test_a_critical_task_starts_before_queued_low_ones_on_the_control_plane(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    """The control plane alone, its threads busy: 5 critical tasks sent
    after 20 low ones start before all but a few of them (the prefetched low
    one, and those that took threads alongside the criticals). The executor
    used to take 256 jobs for its 8 threads, and all 20 low ones ran first."""
    async with fleet(control_env) as f:
        await f.start_control(FASTWORKER_PREFETCH=str(PREFETCH))
        async with Client(f.address) as client:
            order = await priority_case(f, client)
    assert sorted(order) == sorted([f"low{i}" for i in range(20)] +
                                   [f"crit{i}" for i in range(5)])
    assert lows_before_last_critical(order) <= PREFETCH + THREADS, order


async def test_a_critical_task_starts_before_queued_low_ones_on_a_subworker(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    """The same on a subworker (the control plane only coordinates)."""
    async with fleet(control_env) as f:
        await f.start_control(FASTWORKER_LOCAL="never")
        sub = await f.start_sub(FASTWORKER_PREFETCH=str(PREFETCH))
        async with Client(f.address) as client:
            order = await priority_case(f, client)
    assert {pid for pid, _ in f.gate.started} == {sub.process.pid}
    assert lows_before_last_critical(order) <= PREFETCH + THREADS, order


async def test_an_idle_newcomer_gets_the_queue_a_busy_worker_cannot_start(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    """A subworker with every slot busy and 10 tasks queued: a second one
    that joins starts them (all but the one prefetched by the first) while
    the first is still busy. The first used to hold all of them."""
    async with fleet(control_env) as f:
        await f.start_control(FASTWORKER_LOCAL="never")
        busy_worker = await f.start_sub(concurrency=SLOTS, FASTWORKER_PREFETCH=str(PREFETCH))
        async with Client(f.address) as client:
            await saturate(f, client, "busy")
            for i in range(10):
                await client.delay("tests.hold", f.gate.port, f"q{i}", priority="low")
            newcomer = await f.start_sub(concurrency=16, FASTWORKER_PREFETCH=str(PREFETCH))
            await f.gate.wait_started(SLOTS + 10 - PREFETCH)
            started = list(f.gate.started)
            await f.gate.open()
    assert {pid for pid, label in started if label.startswith("busy")} == {
        busy_worker.process.pid}
    on_newcomer = sorted(label for pid, label in started if pid == newcomer.process.pid)
    assert len(on_newcomer) == 10 - PREFETCH, started


async def test_with_the_default_prefetch_a_busy_worker_holds_one_job_for_a_newcomer_s_ten(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    """The same with the shipped prefetch (up to 128 per kind): it follows
    the start rate, and slots that start nothing hold one job beyond
    themselves, so the newcomer still starts all but one of the queue."""
    async with fleet(control_env) as f:
        await f.start_control(FASTWORKER_LOCAL="never")
        busy_worker = await f.start_sub(concurrency=SLOTS)
        async with Client(f.address) as client:
            await saturate(f, client, "busy")
            for i in range(10):
                await client.delay("tests.hold", f.gate.port, f"q{i}", priority="low")
            newcomer = await f.start_sub(concurrency=16)
            await f.gate.wait_started(SLOTS + 9)
            started = list(f.gate.started)
            await f.gate.open()
    assert {pid for pid, label in started if label.startswith("busy")} == {
        busy_worker.process.pid}
    assert sum(pid == newcomer.process.pid for pid, _ in started) == 9, started


async def test_a_drained_worker_gives_back_what_it_has_not_started(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    """An operator drains the only subworker while it is busy: the task it
    prefetched comes back to the queue at once, and the control plane's
    executor (the only worker left for the task) starts it and the queued
    ones while the drained worker's running tasks go on. Each runs once,
    as its first attempt. The drained worker used to keep what it held
    until its slots freed."""
    dashboard = f"127.0.0.1:{free_tcp_ports(1)}"
    async with fleet(control_env) as f:
        control = await f.start_control(FASTWORKER_LOCAL="never", FASTWORKER_DASHBOARD=dashboard)
        drained, drained_id = await f.start_registered_sub(**SMALL)
        async with Client(f.address) as client:
            busy = await saturate(f, client, "busy")
            queued = [await client.delay("tests.hold", f.gate.port, f"q{i}", priority="low")
                      for i in range(3)]
            async with httpx.AsyncClient(base_url=f"http://{dashboard}") as http:
                answer = await http.post(f"/api/workers/{drained_id}/drain")
            assert answer.status_code == 200, answer.text
            await control.wait_for(f"worker {drained_id} gave back {PREFETCH} jobs")
            await f.gate.wait_started(SLOTS + 3)
            started = list(f.gate.started)
            await f.gate.open()
            pids = await client.results(busy + queued, timeout=20)
            records = [await client.status(task_id) for task_id in queued]
    assert sorted(label for pid, label in started if pid == control.process.pid) == [
        "q0", "q1", "q2"]
    assert pids == [drained.process.pid] * SLOTS + [control.process.pid] * 3
    assert {r.attempt for r in records} == {1}  # given back unstarted: the same attempt


async def test_a_lost_workers_prefetched_and_running_tasks_run_elsewhere(
    control_env: dict[str, str],  # noqa: F811
) -> None:
    """SIGKILL a busy subworker: what it ran and what it had prefetched run
    on the other one, each once."""
    async with fleet(control_env) as f:
        control = await f.start_control(FASTWORKER_LOCAL="never")
        doomed, doomed_id = await f.start_registered_sub(**SMALL)
        async with Client(f.address) as client:
            busy = await saturate(f, client, "busy")
            queued = [await client.delay("tests.hold", f.gate.port, f"q{i}", priority="low")
                      for i in range(3)]
            survivor = await f.start_sub(concurrency=SLOTS, FASTWORKER_PREFETCH=str(PREFETCH))
            await f.gate.wait_started(SLOTS + 3 - PREFETCH)
            assert await doomed.stop(signal.SIGKILL) == -signal.SIGKILL
            await control.wait_for(f"worker {doomed_id} lost")
            await f.gate.open()
            pids = await client.results(busy + queued, timeout=20)
    assert pids == [survivor.process.pid] * (SLOTS + 3)
    ran = [label for pid, label in f.gate.started if pid == survivor.process.pid]
    assert sorted(ran) == sorted({*ran}) and len(ran) == SLOTS + 3
