"""A client whose control plane is not there fails fast, naming the address.

Until a client has first reached its control plane, a call waits at most
``connect_timeout`` for a connection, then raises ``NoControlPlane`` (a
``ConnectionLost``): nothing was sent. The wire-level behaviour (nothing
sent, a server that goes away after connecting is waited for) is tested in
``tests/actors/test_nng.py``.
"""

from __future__ import annotations

import asyncio

import pytest
import trio

from actors.pytest_plugin import free_tcp_ports
from fastworker import Client, ConnectionLost, NoControlPlane, SyncClient

GUARD = 10  # seconds; far above the connect timeouts used here


@pytest.fixture
def address() -> str:
    """A base address nothing listens on."""
    return f"tcp://127.0.0.1:{free_tcp_ports(6)}"


def check(error: NoControlPlane, address: str) -> None:
    text = str(error)
    assert isinstance(error, ConnectionLost)
    assert text.startswith(f"no control plane at {address}: ")
    assert "nothing accepted a connection within 0.3 s" in text
    assert "FASTWORKER_ADDRESS" in text


async def test_each_kind_of_call_fails_fast_under_trio(address: str) -> None:
    async with Client(address, connect_timeout=0.3) as client:
        with trio.fail_after(GUARD):
            for call in (lambda: client.delay("examples.noop"),
                         lambda: client.submit("examples.noop"),
                         lambda: client.result("never-submitted"),
                         lambda: client.status("never-submitted"),
                         lambda: client.cancel("never-submitted")):
                with pytest.raises(NoControlPlane) as caught:
                    await call()
                check(caught.value, address)


def test_asyncio_and_the_sync_client_fail_the_same(address: str) -> None:
    async def main() -> None:
        async with Client(address, connect_timeout=0.3) as client:
            with pytest.raises(NoControlPlane) as caught:
                await asyncio.wait_for(client.delay("examples.noop"), GUARD)
            check(caught.value, address)

    asyncio.run(main())
    with SyncClient(address, connect_timeout=0.3) as client:
        with pytest.raises(NoControlPlane) as caught:
            client.delay("examples.noop")
        check(caught.value, address)


async def test_without_a_connect_timeout_the_request_timeout_applies(address: str) -> None:
    """``connect_timeout=None``: the call waits its request timeout, and
    fails as a lost connection, not as no control plane."""
    async with Client(address, connect_timeout=None, request_timeout=0.5,
                      queue_wait=0) as client:
        with trio.fail_after(GUARD), pytest.raises(ConnectionLost) as caught:
            await client.delay("examples.noop")
    assert not isinstance(caught.value, NoControlPlane)
    assert "no answer from the control plane" in str(caught.value)
