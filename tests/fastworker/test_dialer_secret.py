"""Which secret a client or a subworker's link signs with, by where its
control plane is (``actors.secret.dialer_secret``).

A control plane on this host may start after them, so for a local address
they make the per-host secret if it is missing (whoever starts first makes
it); for another host a missing one is an error naming the path: at once
for a given address, once found for a discovered one (a link passes it
over and keeps looking; a client's ``open`` raises).
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from actors import ConfigError
from actors.secret import auto_secret_path
from fastworker import InvalidSubmission
from fastworker.client import connection as client_connection
from fastworker.client.connection import Connection
from fastworker.link import actor as link_actor
from fastworker.link import finding
from fastworker.link.actor import LinkOptions
from fastworker.probe import Announcement

REMOTE = "tcp://10.0.0.5:5555"
LOCAL = "tcp://127.0.0.1:5555"


def options(**changes: Any) -> LinkOptions:
    return LinkOptions(**{"secret_file": "auto", "discovery_port": 0, **changes})


def test_a_local_control_plane_s_link_makes_the_per_host_secret(state_home: Path) -> None:
    framer = link_actor._framer_for(options(address=LOCAL), LOCAL)
    path = auto_secret_path()
    assert framer.signed and framer.secret == path.read_bytes().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_another_host_s_link_reads_and_names_the_missing_file(state_home: Path) -> None:
    with pytest.raises(ConfigError, match=f"no per-host secret at {auto_secret_path()}: "):
        link_actor._framer_for(options(address=REMOTE), REMOTE)
    assert not auto_secret_path().exists()


def announcement(host: str) -> Announcement:
    return Announcement(name=f"cp-{host}", host=host, pid=1, scheme="tcp", listen_host=host,
                        port=5555, protocol=1, secret_required=True, version="0")


async def test_discovery_passes_over_another_host_without_its_secret(
    state_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Found first on another host (no secret for it here), then on this
    one: the first is passed over with the reason, the second is taken with
    the per-host secret."""
    found = iter([(REMOTE, announcement("10.0.0.5")), (LOCAL, announcement("127.0.0.1"))])

    async def discover_forever(**_: Any) -> tuple[str, Announcement]:
        return next(found)

    monkeypatch.setattr(finding, "discover_forever", discover_forever)
    monkeypatch.setattr(finding, "_REDISCOVER_DELAY", 0)
    link_options = options(discovery_port=5550)
    with caplog.at_level(logging.ERROR, logger="fastworker.link"):
        address, framer = await finding.find_control_plane(
            link_options, lambda address: link_actor._framer_for(link_options, address), "link")
    assert address == LOCAL
    assert framer.secret == auto_secret_path().read_bytes().strip()
    [passed] = [r.getMessage() for r in caplog.records]
    assert passed.startswith(f"link: passing over the control plane cp-10.0.0.5 found at "
                             f"{REMOTE}, looking again in 0 s: no per-host secret at ")


@pytest.mark.parametrize("found", [REMOTE, LOCAL])
async def test_a_discovering_client_signs_for_the_control_plane_it_found(
    state_home: Path, monkeypatch: pytest.MonkeyPatch, found: str,
) -> None:
    """The secret is chosen for the address discovery found, not for the
    default one: another host's control plane with no secret set here is
    refused naming the file (and no file is made); this host's gets the
    per-host secret, made if missing."""
    host = found.split("//")[1].split(":")[0]

    async def discover(timeout: float) -> tuple[str, Announcement]:
        return found, announcement(host)

    monkeypatch.setattr(client_connection, "discover", discover)
    monkeypatch.delenv("FASTWORKER_ADDRESS", raising=False)
    connection = Connection(None, None, discover=1.0, max_frame_bytes=1 << 20, contexts=1)
    if found == REMOTE:
        with pytest.raises(InvalidSubmission, match=f"no per-host secret at {auto_secret_path()}"):
            await connection.open()
        assert not auto_secret_path().exists()
    else:
        try:
            ports = await connection.open()
            assert ports[0]._requester.framer.secret == auto_secret_path().read_bytes().strip()
        finally:
            await connection.aclose()
