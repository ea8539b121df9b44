"""Secure by default on one host: a control plane started with no secret
configured signs with this user's per-host secret, refuses unsigned frames
even on loopback, and a default client of the same user just works."""

from __future__ import annotations

import functools
import stat
from pathlib import Path

import pytest

from actors.edge import offset_address
from actors.frame import Framer
from actors.nng import open_request_wire
from actors.pytest_plugin import free_tcp_ports
from actors.testing import RawRequests
from examples import tasks
from fastworker import Client, InvalidSubmission
from fastworker.messages import CODEC, StatusQuery
from tests.process.harness import control_plane, env, fastworker_run  # noqa: F401 (fixture)

QUERIES = 4  # the queries port's offset from the base address


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811 (the fixture)
    """A control plane's environment with no secret of any kind set."""
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    assert not {"FASTWORKER_SECRET", "FASTWORKER_SECRET_FILE"} & env.keys()
    return env


async def test_a_local_unsigned_frame_is_refused_with_the_auto_secret(
    control_env: dict[str, str], state_home: Path
) -> None:
    """The first start makes the per-host secret (0600); an unsigned frame
    from a local process is dropped and logged, one signed with that file's
    secret is answered, and a default Client works."""
    address = control_env["FASTWORKER_ADDRESS"]
    secret_file = state_home / "fastworker" / "secret"
    async with control_plane(control_env) as node:
        query = [StatusQuery(ids=("x",))]
        wire = await open_request_wire(offset_address(address, QUERIES),
                                       recv_max_size=1 << 20, contexts=2)
        try:
            with pytest.raises(TimeoutError):
                await wire.request(Framer(CODEC).pack(query), timeout=0.5)
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
            signed = RawRequests(Framer(CODEC, secret=secret_file.read_bytes().strip()),
                                 functools.partial(wire.request, timeout=10))
            _, answer = await signed.send(query)
        finally:
            await wire.aclose()
        assert [type(message).__name__ for message in answer] == ["Records"]
        line = await node.wait_for("dropped frame from tcp://127.0.0.1:")
        assert line.endswith(
            "unsigned frame (this end requires a shared secret) (1 dropped in the last 60 s)")
        async with Client(address) as client:
            assert await client.submit(tasks.add, 1, 2) == 3


async def test_a_client_of_another_host_without_the_per_host_secret_says_where_it_looked(
    state_home: Path,
) -> None:
    """A default client of a control plane on another host, with no secret
    set and no per-host secret here, fails at once naming the file and
    what to set, not after a request's timeout; it makes no file (the other
    host would not have it)."""
    with pytest.raises(InvalidSubmission) as raised:
        Client("tcp://10.0.0.5:5555")
    path = state_home / "fastworker" / "secret"
    assert str(raised.value) == (
        f"no per-host secret at {path}: it is made on this host by this user's control "
        "planes, and by their clients and subworkers here; for a control plane on another "
        "host, set FASTWORKER_SECRET / FASTWORKER_SECRET_FILE to its secret"
    )
    assert not path.exists()


async def test_a_client_and_a_subworker_started_before_their_control_plane_agree_with_it(
    control_env: dict[str, str], state_home: Path,
) -> None:
    """On a fresh host, a client and a subworker of a local control plane
    may start first: whichever comes first makes the per-host secret, 0600,
    and the control plane started after them uses it; a task only the
    subworker knows runs there."""
    address = control_env["FASTWORKER_ADDRESS"]
    path = state_home / "fastworker" / "secret"
    assert not path.exists()
    async with Client(address) as client:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        sub_env = {**control_env, "FASTWORKER_TASKS": "tests.process.worker_tasks"}
        async with fastworker_run("config/sub.toml", sub_env) as sub:
            async with control_plane(control_env):
                await sub.wait_for("registered with")
                assert await client.submit("tests.pid") == sub.process.pid


async def test_a_subworker_of_the_same_user_joins_with_no_secret_set(
    control_env: dict[str, str],
) -> None:
    """A subworker on the same host finds the per-host secret by itself and
    runs tasks the control plane hands it."""
    address = control_env["FASTWORKER_ADDRESS"]
    control_env["FASTWORKER_TASKS"] = "examples.tasks"
    async with control_plane(control_env), fastworker_run("config/sub.toml", control_env) as sub:
        await sub.wait_for("registered with")
        async with Client(address) as client:
            assert await client.submit(tasks.add, 2, 3) == 5
