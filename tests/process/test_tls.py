"""Mutual TLS end to end with real processes: a control plane listening on
``tls+tcp://0.0.0.0`` with no shared secret, a subworker and a ``Client``
configured only by the ``FASTWORKER_TLS_*`` variables; a client whose
certificate another CA signed is refused while the others go on."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.pytest_plugin import free_tcp_ports
from fastworker import Client, ConnectionLost, InvalidSubmission
from tests.pki import Pki, make_pki
from tests.process.harness import control_plane, env, fastworker_run  # noqa: F401 (fixture)

SUB = "config/sub.toml"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def tasks_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811 (the fixture)
    env["FASTWORKER_TASKS"] = "examples.tasks,tests.process.worker_tasks"
    return env


def tls_environ(pki: Pki, name: str) -> dict[str, str]:
    """The three variables for the CA and the certificate ``name``."""
    return {"FASTWORKER_TLS_CA": pki.path("ca.pem"),
            "FASTWORKER_TLS_CERT": pki.path(f"{name}.pem"),
            "FASTWORKER_TLS_KEY": pki.path(f"{name}.key")}


async def test_mutual_tls_without_a_secret_runs_a_task_end_to_end(
    tasks_env: dict[str, str], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control plane listens off loopback on mutual TLS alone; a
    subworker and a client with certificates from its CA, set only through
    the environment, run a task there. A client with a certificate from
    another CA, and one with none, get no answer, and the good client is
    served afterwards."""
    port = free_tcp_ports(6)
    control_env = {**tasks_env, "FASTWORKER_ADDRESS": f"tls+tcp://0.0.0.0:{port}",
                   **tls_environ(pki, "server")}
    address = f"tls+tcp://127.0.0.1:{port}"
    sub_env = {**tasks_env, "FASTWORKER_ADDRESS": address, **tls_environ(pki, "client")}
    for name, value in {"FASTWORKER_ADDRESS": address, **tls_environ(pki, "client")}.items():
        monkeypatch.setenv(name, value)
    with trio.fail_after(30):
        await run_fleet(control_env, sub_env, port, pki, monkeypatch)


async def run_fleet(control_env: dict[str, str], sub_env: dict[str, str], port: int, pki: Pki,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    address = sub_env["FASTWORKER_ADDRESS"]
    async with control_plane(control_env) as control, fastworker_run(SUB, sub_env) as sub:
        assert f"listening on tls+tcp://0.0.0.0:{port + 5}" in control.output
        await sub.wait_for("offered")
        async with Client() as client:
            assert client.address == address
            assert await client.submit("tests.pid") == sub.process.pid
        stranger = tls_environ(pki, "stranger")
        monkeypatch.setenv("FASTWORKER_TLS_CERT", stranger["FASTWORKER_TLS_CERT"])
        monkeypatch.setenv("FASTWORKER_TLS_KEY", stranger["FASTWORKER_TLS_KEY"])
        async with Client(request_timeout=1.0) as refused:
            with pytest.raises(ConnectionLost, match="FASTWORKER_TLS_CERT"):
                await refused.delay("tests.pid")
        async with Client(request_timeout=1.0, tls=pki.no_certificate_client) as refused:
            with pytest.raises(ConnectionLost, match="FASTWORKER_TLS_CERT"):
                await refused.delay("tests.pid")
        async with Client(tls=pki.client) as client:
            assert await client.submit("tests.pid") == sub.process.pid


async def test_a_client_refuses_to_reach_a_tls_control_plane_without_tls_or_downgrade(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings that do not fit the address fail when the client opens,
    naming the variables: a tls+tcp:// address with none, and a plain
    address with them (no silent fall back to plain TCP)."""
    for name in ("FASTWORKER_TLS_CA", "FASTWORKER_TLS_CERT", "FASTWORKER_TLS_KEY",
                 "FASTWORKER_TLS_SERVER_NAME", "FASTWORKER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidSubmission, match="no TLS settings are given: set ca_file "
                       r"\(FASTWORKER_TLS_CA\)"):
        async with Client("tls+tcp://127.0.0.1:5555"):
            pass
    for name, value in tls_environ(pki, "client").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSubmission, match="refusing to dial without TLS"):
        async with Client("tcp://127.0.0.1:5555"):
            pass


async def test_discovery_finds_a_tls_control_plane_and_passes_it_over_without_tls(
    tasks_env: dict[str, str], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A discovered tls+tcp:// address is dialed with the TLS settings: a
    subworker and a client that have them find the control plane and run a
    task; a subworker without them says why it passes the control plane
    over, and keeps looking."""
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as probe:
        await probe.bind(("127.0.0.1", 0))
        discovery = str(probe.getsockname()[1])
    address = f"tls+tcp://127.0.0.1:{free_tcp_ports(6)}"
    tasks_env["FASTWORKER_DISCOVERY_PORT"] = discovery
    control_env = {**tasks_env, "FASTWORKER_ADDRESS": address, **tls_environ(pki, "server")}
    sub_env = {**tasks_env, **tls_environ(pki, "client")}
    monkeypatch.delenv("FASTWORKER_ADDRESS", raising=False)
    monkeypatch.setenv("FASTWORKER_DISCOVERY_PORT", discovery)
    for name, value in tls_environ(pki, "client").items():
        monkeypatch.setenv(name, value)
    with trio.fail_after(30):
        async with (control_plane(control_env), fastworker_run(SUB, sub_env) as sub,
                    fastworker_run(SUB, tasks_env) as plain):
            line = await plain.wait_for("passing over the control plane")
            assert f"found at {address}, looking again in 5 s: {address}: the address uses " \
                   "TLS but no TLS settings are given: set ca_file (FASTWORKER_TLS_CA)" in line
            await sub.wait_for("offered")
            async with Client(discover=5.0) as client:
                assert client.address == address
                assert await client.submit("tests.pid") == sub.process.pid
