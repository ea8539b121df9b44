"""A captured signed request frame, replayed to a real control plane before
and after it restarts, is refused and runs nothing; the client library and
the first copy of the frame work as before.

The frame is captured and replayed with raw pynng (``RawRequests`` over a
``RequestWire``), as someone who can read and send on the network but does
not know the secret would; nothing here sleeps to wait for something.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from actors.edge import offset_address
from actors.errors import StaleFrame
from actors.frame import Framer, secret_from
from actors.nng import open_request_wire
from actors.pytest_plugin import free_tcp_ports
from actors.testing import RawRequests
from fastworker import Client
from fastworker.messages import CODEC, Accepted, Submit
from fastworker.payload import pack_call
from tests.process.harness import GUARD, control_plane, env  # noqa: F401 (fixture)

SECRET = "replay-secret"
#: The submission port a Submit of priority "normal" goes to.
NORMAL = 2


@pytest.fixture
def control_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811 (fixture)
    env["FASTWORKER_ADDRESS"] = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    env["FASTWORKER_TASKS"] = "examples.tasks,tests.process.control_tasks"
    env["FASTWORKER_SECRET"] = SECRET
    return env


@pytest.mark.parametrize("journal", ["off", "on"])
async def test_a_replayed_submit_is_refused_before_and_after_a_restart(
    control_env: dict[str, str], tmp_path: Path, journal: str
) -> None:
    """A signed Submit frame is accepted and its task runs once; the same
    bytes sent again to the same control plane, and again after it
    restarted (journal off or on), are refused as stale, logged with the
    peer, and run nothing: the tally file holds the first run and the
    client's own task after the restart, nothing else."""
    control_env["FASTWORKER_JOURNAL"] = "off" if journal == "off" else str(tmp_path / "journal")
    address = control_env["FASTWORKER_ADDRESS"]
    tally = tmp_path / "tally"
    framer = Framer(CODEC, secret=secret_from(SECRET))
    submit = Submit(id="replayed-1", task="tests.tally",
                    payload=pack_call((str(tally), "captured"), {}))
    refused = ("sequence already seen", "stamped for another epoch")
    captured = b""
    for start, reason in enumerate(refused):
        async with control_plane(control_env) as node:
            wire = await open_request_wire(offset_address(address, NORMAL), recv_max_size=1 << 20)
            try:
                raw = RawRequests(framer, functools.partial(wire.request, timeout=GUARD))
                if start == 0:
                    captured, answers = await raw.send([submit])
                    assert answers == [Accepted(id="replayed-1")]
                for _ in range(3):
                    with pytest.raises(StaleFrame):
                        await raw.resend(captured)
            finally:
                await wire.aclose()
            line = await node.wait_for("refused a stale request from tcp://127.0.0.1:")
            assert reason in line and "(1 refused as stale in the last 60 s)" in line
            async with Client(address, secret=SECRET, request_timeout=GUARD) as client:
                if start == 0:
                    assert await client.result("replayed-1", timeout=GUARD) == 1
                else:
                    assert await client.submit("tests.tally", str(tally), "client") == 2
    assert tally.read_text().splitlines() == ["captured", "client"]
