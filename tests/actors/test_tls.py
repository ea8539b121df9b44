"""TLS at a serving edge: with a client CA (mutual TLS) it serves the
clients that CA signed, refuses one signed by another CA and one with no
certificate, and keeps serving afterwards; the loopback rule counts mutual
TLS as authentication and server-only TLS as none. Certificates are made
per test with ``openssl`` (tests/pki.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from actors import ConfigError, Framer, GetStats, Requester, ServeEdge, Topology, open_node
from actors.actor import Actor
from actors.nng import open_request_wire
from actors.pytest_plugin import free_tcp_port
from actors.requests import Requests
from actors.tls import TlsOptions, resolve_tls, tls_from_environ
from tests.actors.helpers import Note, codec
from tests.pki import Pki, make_pki

CODEC = "tests.actors.helpers:codec"
MAX = 64 * 1024
#: How long a refused client waits for an answer that must not come.
REFUSED_WAIT = 1.0


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


class Tenfold(Actor[Any]):
    """Answers each Note with a Note ten times its value."""

    async def handle(self, message: Any) -> Any:
        assert isinstance(message, Requests)
        return [Note(m.value * 10) for m in message.messages]


async def ask(address: str, tls: TlsOptions, value: int, *, timeout: float) -> Any:
    """One request over a fresh TLS request wire; its answer."""
    wire = await open_request_wire(address, recv_max_size=MAX, tls=tls)
    try:
        return await Requester(wire, Framer(codec)).ask([Note(value)], timeout=timeout)
    finally:
        await wire.aclose()


def tls_topology(address: str, tls: TlsOptions) -> Topology:
    return (
        Topology()
        .add("serve", ServeEdge, refs={"Note": "tenfold"}, address=address, codec=CODEC,
             tls=attrs.asdict(tls), max_frame_bytes=MAX)
        .add("tenfold", Tenfold)
    )


async def test_mutual_tls_serves_its_clients_and_refuses_the_others(pki: Pki) -> None:
    """A client the CA signed is answered; one signed by another CA, one with
    no certificate, and one that does not trust the server's CA get nothing;
    the good client is answered again afterwards, on a new connection and on
    the first one's address alike."""
    address = f"tls+tcp://127.0.0.1:{free_tcp_port()}"
    wrong_server_ca = attrs.evolve(pki.client, ca_file=pki.path("other-ca.pem"))
    async with open_node(tls_topology(address, pki.server)) as node:
        assert await ask(address, pki.client, 1, timeout=10) == [Note(10)]
        for refused in (pki.other_ca_client, pki.no_certificate_client, wrong_server_ca):
            with pytest.raises(TimeoutError):
                await ask(address, refused, 2, timeout=REFUSED_WAIT)
        assert await ask(address, pki.client, 3, timeout=10) == [Note(30)]
        stats = (await node.refs["serve"].call(GetStats(), timeout=5)).detail
    # Each good client's first request only learns the edge's epoch (freshness).
    assert (stats.requests, stats.replies, stats.epochs_told) == (4, 2, 2)


async def test_server_only_tls_lets_a_client_without_a_certificate_in(pki: Pki) -> None:
    """Without a client CA the listener encrypts but asks no certificate:
    which is why it does not count as authentication off loopback."""
    address = f"tls+tcp://127.0.0.1:{free_tcp_port()}"
    async with open_node(tls_topology(address, pki.server_only)):
        assert await ask(address, pki.no_certificate_client, 4, timeout=10) == [Note(40)]


def test_mutual_tls_may_listen_off_loopback_without_a_secret(pki: Pki) -> None:
    """The off-loopback rule accepts mutual TLS in place of a shared secret,
    and refuses server-only TLS, naming both ways out."""
    tls_topology("tls+tcp://0.0.0.0:5555", pki.server).resolve()
    with pytest.raises(ConfigError) as raised:
        tls_topology("tls+tcp://0.0.0.0:5555", pki.server_only).resolve()
    (problem,) = raised.value.problems
    assert problem.startswith(
        "<python>: $.actors.serve: refusing to listen on tls+tcp://0.0.0.0:5555 without a "
        "shared secret or mutual TLS: set a secret (FASTWORKER_SECRET")
    assert "FASTWORKER_TLS_CA" in problem


class TestResolveTls:
    def test_settings_apply_to_a_tls_address_only(self, pki: Pki) -> None:
        """A tls+tcp:// address takes the settings; a plain one with none set
        (all empty, as unset variables arrive) takes no TLS."""
        assert resolve_tls("tls+tcp://127.0.0.1:1", pki.client, "dial") == pki.client
        unset = TlsOptions(ca_file="", cert_file="")
        assert resolve_tls("tcp://127.0.0.1:1", unset, "dial") is None
        assert resolve_tls("tcp://127.0.0.1:1", None, "listen") is None

    def test_a_dialer_with_settings_refuses_a_plain_address(self, pki: Pki) -> None:
        """No silent fall back to plain TCP (a forged discovery answer, say)."""
        with pytest.raises(ConfigError) as raised:
            resolve_tls("tcp://10.0.0.5:5555", pki.client, "dial")
        assert raised.value.problems == (
            "tcp://10.0.0.5:5555: TLS settings are given but the address is not tls+tcp://: "
            "refusing to dial without TLS (use the tls+tcp:// address, or unset the TLS "
            "settings)",)

    def test_a_tls_address_without_settings_names_the_variables(self) -> None:
        with pytest.raises(ConfigError) as raised:
            resolve_tls("tls+tcp://10.0.0.5:5555", None, "dial")
        assert raised.value.problems == (
            "tls+tcp://10.0.0.5:5555: the address uses TLS but no TLS settings are given: set "
            "ca_file (FASTWORKER_TLS_CA) to the CA that signed the listener's certificate, and "
            "cert_file and key_file (FASTWORKER_TLS_CERT, FASTWORKER_TLS_KEY) if it demands "
            "one",)

    def test_every_problem_is_reported(self, tmp_path: Path) -> None:
        """A key without its certificate, no CA, a missing file: one line each."""
        missing = tmp_path / "client.key"
        with pytest.raises(ConfigError) as raised:
            resolve_tls("tls+tcp://h:1", TlsOptions(key_file=str(missing)), "dial")
        assert raised.value.problems == (
            "tls+tcp://h:1: TLS key_file (FASTWORKER_TLS_KEY) is set without cert_file "
            "(FASTWORKER_TLS_CERT): they go together",
            "tls+tcp://h:1: a TLS dialer needs ca_file (FASTWORKER_TLS_CA) to verify the "
            "listener",
            f"tls+tcp://h:1: TLS key_file (FASTWORKER_TLS_KEY) {missing}: no such file",
        )

    def test_settings_from_the_environment(self) -> None:
        """The four variables fill the settings; none set (or all empty) is no TLS."""
        environ = {"FASTWORKER_TLS_CA": "ca.pem", "FASTWORKER_TLS_CERT": "c.pem",
                   "FASTWORKER_TLS_KEY": "k.pem", "FASTWORKER_TLS_SERVER_NAME": "control"}
        assert tls_from_environ(environ) == TlsOptions(
            ca_file="ca.pem", cert_file="c.pem", key_file="k.pem", server_name="control")
        assert tls_from_environ({}) is None
        assert tls_from_environ({"FASTWORKER_TLS_CA": ""}) is None

