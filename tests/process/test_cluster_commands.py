"""``fastworker status``, ``workers``, ``watch``, ``drain``, ``purge`` and
``retry`` against a running control plane, as an operator runs them: real
processes, hundreds of tasks, exit codes, text and JSON; and the
dashboard's bulk actions over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter

import pytest
import trio

from actors.pytest_plugin import free_tcp_ports
from fastworker import Client, TaskError
from tests.process.harness import control_plane
from tests.process.harness import fastworker_command as fastworker

ADD, FAIL = "examples.tasks.add", "examples.tasks.fail"


async def status(environ: dict[str, str]) -> dict:
    shown = await fastworker(environ, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


async def test_drain_then_purge_a_backlog_by_priority_name_and_schedule(
        control_env: dict[str, str]) -> None:
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env):
        before = await status(control_env)
        [local] = before["workers"]
        assert local["local"] and local["health"] == "alive" and not local["drained"]
        drained = await fastworker(control_env, "drain", local["worker"])
        assert drained.returncode == 0 and drained.stdout.decode().strip().endswith("drained")

        async with Client(address) as client:  # nothing runs: they stay queued
            normal = await client.delay_many(ADD, [(i, 0) for i in range(300)])
            low = await client.delay_many(ADD, [(i, 1) for i in range(100)], priority="low")
            nap = await client.delay_many("examples.tasks.nap", [(0.0,)] * 20)
            later = [await client.send(ADD, (i, 2), countdown=3600) for i in range(30)]
        now = await status(control_env)
        assert now["queued"] == {"critical": 0, "high": 0, "normal": 320, "low": 100}
        assert now["scheduled"] == 30 and now["accepted_total"] == 450
        assert now["workers"][0]["drained"] is True
        table = (await fastworker(control_env, "workers")).stdout.decode().splitlines()
        assert table[0].split()[:3] == ["WORKER", "WHERE", "HEALTH"]
        assert "alive (drained)" in table[1]
        listed = json.loads((await fastworker(control_env, "workers", "--json")).stdout)
        assert [(w["worker"], w["local"], w["drained"], w["running"]) for w in listed] == [
            (local["worker"], True, True, 0)]
        text = (await fastworker(control_env, "status")).stdout.decode()
        assert "normal 320  low 100  (420 of 100,000; 30 scheduled)" in text

        unsure = await fastworker(control_env, "purge")
        assert unsure.returncode == 2 and "add --yes" in unsure.stderr.decode()
        assert sum((await status(control_env))["queued"].values()) == 420  # nothing purged

        by_priority = await fastworker(control_env, "purge", "--priority", "low", "--yes",
                                       "--json")
        assert by_priority.returncode == 0, by_priority.stderr
        assert json.loads(by_priority.stdout) == {"purged": 100}
        by_name = await fastworker(control_env, "purge", "--name", ADD, "--yes")
        assert by_name.stdout.decode().strip() == (
            f"purged 300 tasks (every queued task named {ADD})")
        now = await status(control_env)
        assert now["queued"]["normal"] == 20 and now["scheduled"] == 30  # the naps, the later
        scheduled_too = await fastworker(control_env, "purge", "--scheduled", "--yes", "--json")
        assert json.loads(scheduled_too.stdout) == {"purged": 50}
        now = await status(control_env)
        assert sum(now["queued"].values()) == 0 and now["scheduled"] == 0
        assert now["cancelled_total"] == 450

        async with Client(address) as client:  # each purged task: cancelled, none lost
            states = Counter([(await client.status(id)).state
                              for id in [*normal, *low, *nap, *later]])
        assert states == Counter({"cancelled": 450})

        resumed = await fastworker(control_env, "drain", local["worker"], "--resume", "--json")
        assert json.loads(resumed.stdout) == {"worker": local["worker"], "outcome": "resumed"}
        unknown = await fastworker(control_env, "drain", "nobody")
        assert unknown.returncode == 1 and "no such live worker" in unknown.stdout.decode()


async def test_retry_the_failed_tasks_once_each(control_env: dict[str, str]) -> None:
    address = control_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env):
        async with Client(address) as client:
            failing = await client.delay_many(FAIL, [(f"bad {i}",) for i in range(250)])
            done = await client.delay_many(ADD, [(i, i) for i in range(50)])
            for id in failing:
                with pytest.raises(TaskError):
                    await client.result(id, timeout=60)
            await client.results(done, timeout=60)

            retried = await fastworker(control_env, "retry", "--failed", "--json")
            assert retried.returncode == 0, retried.stderr
            report = json.loads(retried.stdout)
            assert report["refused"] == []
            old = Counter(entry["id"] for entry in report["retried"])
            assert old == Counter(failing)  # each failed task once, none of the others
            new = [entry["new_id"] for entry in report["retried"]]
            # One operation: every retry's id is its task's, and the command's word.
            [word] = {e["new_id"].removeprefix(e["id"] + "-retry-") for e in report["retried"]}
            assert len(word) == 8 and report["not_tried"] == 0
            for id in new:
                with pytest.raises(TaskError, match="bad"):
                    await client.result(id, timeout=60)

            # Again: only the retries failed and are not yet retried.
            again = await fastworker(control_env, "retry", "--failed", "--name", FAIL,
                                     "--json")
            second = json.loads(again.stdout)["retried"]
            assert Counter(e["id"] for e in second) == Counter(new)
            for entry in second:
                with pytest.raises(TaskError):
                    await client.result(entry["new_id"], timeout=60)
            none_of_these = await fastworker(control_env, "retry", "--failed", "--name", ADD)
            assert none_of_these.stdout.decode().strip() == f"no failed tasks to retry named {ADD}"

            # By id: a succeeded task and an unknown one are refused, and said why.
            mixed = await fastworker(control_env, "retry", failing[0], done[0], "no-such-id")
            assert mixed.returncode == 1
            lines = mixed.stdout.decode().splitlines()
            assert lines[0].startswith(f"{failing[0]} -> {failing[0]}-retry-")
            assert not lines[0].endswith(word)  # another operation, another retry
            assert lines[1] == (f"{done[0]}: not retried: it is succeeded (only failed, "
                                "cancelled or expired tasks can be retried)")
            assert lines[2] == "no-such-id: not retried: unknown: no record of it is held"
            with pytest.raises(TaskError, match="bad 0"):
                await client.result(lines[0].split(" -> ")[1], timeout=60)

            # The same request sent twice (its answer lost, say) is one retry.
            first = await client.admin.retry([failing[1]], nonce="resent01")
            second = await client.admin.retry([failing[1]], nonce="resent01")
            assert first.retried == second.retried == (
                (failing[1], f"{failing[1]}-retry-resent01"),)
            page = await client.list_tasks(id="-retry-resent01")
            assert page.total == 1
            with pytest.raises(TaskError, match="bad 1"):
                await client.result(f"{failing[1]}-retry-resent01", timeout=60)

        watched = await fastworker(control_env, "watch", "--count", "2", "--interval", "0.1",
                                   "--json")
        frames = [json.loads(line) for line in watched.stdout.decode().splitlines()]
        assert len(frames) == 2 and frames[1]["failed_total"] == 250 + 250 + 250 + 1 + 1
        screen = await fastworker(control_env, "watch", "--count", "1")
        assert screen.returncode == 0 and screen.stdout.decode().startswith("control  fastworker")


async def test_a_missing_control_plane_is_exit_3() -> None:
    gone = await fastworker({**_plain_env(), "FASTWORKER_ADDRESS":
                             f"tcp://127.0.0.1:{free_tcp_ports(6)}"}, "status")
    assert gone.returncode == 3
    assert "no control plane" in gone.stderr.decode().lower()


def _plain_env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith("FASTWORKER_")}


async def test_the_dashboard_purges_and_retries_in_bulk_when_confirmed(
        control_env: dict[str, str]) -> None:
    address = control_env["FASTWORKER_ADDRESS"]
    web = free_tcp_ports(1)
    control_env["FASTWORKER_DASHBOARD"] = f"127.0.0.1:{web}"

    def post(path: str) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{web}/api/{path}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    async with control_plane(control_env):
        async with Client(address) as client:
            later = [await client.send(ADD, (i, 0), countdown=3600) for i in range(40)]
            code, body = await trio.to_thread.run_sync(post, "purge?confirm=true")
            assert (code, body) == (200, {"purged": 0})  # held for later: not queued
            code, body = await trio.to_thread.run_sync(post, "purge?scheduled=true")
            assert code == 400
            code, body = await trio.to_thread.run_sync(
                post, "purge?scheduled=true&confirm=true")
            assert (code, body) == (200, {"purged": 40})
            assert {(await client.status(id)).state for id in later} == {"cancelled"}
            failing = await client.delay_many(FAIL, [(f"bad {i}",) for i in range(120)])
            for id in failing:
                with pytest.raises(TaskError):
                    await client.result(id, timeout=60)
            code, body = await trio.to_thread.run_sync(post, "retry-failed")
            assert code == 400 and "confirm=true" in body["detail"]
            code, body = await trio.to_thread.run_sync(
                post, f"retry-failed?task={FAIL}&confirm=true")
            assert (code, body["retried"], body["refused"], body["remaining"]) == (
                200, 120, 0, 0)

            code, body = await trio.to_thread.run_sync(
                post, "purge?priority=urgent&confirm=true")
            assert code == 400 and "urgent" in body["detail"]
