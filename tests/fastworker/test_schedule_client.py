"""countdown, eta and expires from the client, through the shipped control
plane in process (real time, short delays; the inbox's own tests use
MockClock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from examples import tasks
from fastworker import InvalidSubmission, TaskExpired
from tests.dashboard import dash_tasks
from tests.dashboard.harness import PATIENCE, open_control

#: One async slot and no prefetch: a second task waits in the queue.
ONE_SLOT = {"FASTWORKER_CONCURRENCY": "1", "FASTWORKER_PREFETCH": "0"}


async def test_countdown_holds_a_task_until_its_time() -> None:
    async with open_control() as control:
        task_id = await control.client.send(tasks.add, (1, 2), countdown=0.5)
        scheduled = await control.client.status(task_id)
        page = await control.get(f"/api/tasks/{task_id}")
        assert await control.client.result(task_id, timeout=PATIENCE) == 3
        done = await control.client.status(task_id)
    assert scheduled.state == "scheduled"
    assert scheduled.scheduled_for - scheduled.queued_at == pytest.approx(0.5, abs=0.05)
    assert page["actions"]["cancel"] is True
    assert [e["event"] for e in page["timeline"]] == ["accepted", "scheduled"]
    assert done.started_at >= scheduled.scheduled_for - 0.01


async def test_eta_is_an_aware_datetime_and_a_scheduled_task_can_be_cancelled() -> None:
    async with open_control() as control:
        eta = datetime.now(timezone.utc) + timedelta(hours=1)
        task_id = await control.client.send(tasks.add, (1, 2), eta=eta)
        record = await control.client.status(task_id)
        outcome = await control.client.cancel(task_id)
        final = await control.client.status(task_id)
    assert record.state == "scheduled"
    assert record.scheduled_for == pytest.approx(eta.timestamp(), abs=1.0)
    assert (outcome, final.state) == ("cancelled", "cancelled")


async def test_a_task_still_queued_at_its_deadline_raises_task_expired() -> None:
    async with open_control(environ=ONE_SLOT) as control:
        holder = await control.client.delay(dash_tasks.hold, "slot")
        await control.until(lambda s: s["overview"]["in_flight"] == 1)
        doomed = await control.client.send(tasks.add, (1, 1), expires=0.3)
        with pytest.raises(TaskExpired, match="deadline"):
            await control.client.result(doomed, timeout=PATIENCE)
        dash_tasks.gate("slot").set()
        assert await control.client.result(holder, timeout=PATIENCE) == "slot"
        record = await control.client.status(doomed)
        page = await control.get(f"/api/tasks/{doomed}")
    assert (record.state, record.started_at) == ("expired", 0.0)
    assert page["actions"] == {"cancel": False, "retry": True}


async def test_a_deadline_in_time_changes_nothing() -> None:
    async with open_control() as control:
        task_id = await control.client.send(tasks.add, (2, 2), expires=60)
        assert await control.client.result(task_id, timeout=PATIENCE) == 4


@pytest.mark.parametrize(("options", "complaint"), [
    ({"countdown": 1, "eta": 5.0}, "countdown or eta, not both"),
    ({"eta": datetime(2030, 1, 1)}, "aware datetime"),
    ({"expires": -1}, "already past"),
    ({"expires": "soon"}, "expires must be seconds or a datetime"),
    ({"countdown": float("inf")}, "countdown must be a number"),
])
async def test_bad_schedule_options_are_refused_by_the_client(
    options: dict[str, object], complaint: str
) -> None:
    async with open_control() as control:
        with pytest.raises(InvalidSubmission, match=complaint):
            await control.client.send(tasks.add, (1, 2), **options)  # type: ignore[arg-type]
