"""Discovery over UDP: a Beacon answering real probes on loopback, what an
answer holds (never the secret), bad datagrams, a taken port, timeouts,
other protocols, asyncio, and the "still looking" warning."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import pytest
import trio

import fastworker
from actors import GetStats, Topology, open_node
from fastworker import probe
from fastworker.errors import DiscoveryTimeout
from fastworker.probe import (
    MAGIC,
    PROBE,
    Announcement,
    default_targets,
    discover,
    discover_forever,
)
from fastworker.stats import BeaconStats
from fastworker.messages import PROTOCOL_VERSION

#: Real seconds a test waits before failing instead of hanging.
PATIENCE = 10.0


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def open_beacon(**options: Any) -> AsyncIterator[tuple[str | None, Any]]:
    """A node running only a beacon (named by its ``module:Class`` kind, as
    a topology file would); yields its ready line and its ref."""
    options.setdefault("bind", "127.0.0.1")
    topology = Topology(name="beacon-node").add("beacon", "fastworker.discovery:Beacon",
                                                **options)
    async with open_node(topology) as node:
        yield node.ready["beacon"], node.refs["beacon"]


async def beacon_stats(ref: Any) -> BeaconStats:
    detail = (await ref.call(GetStats())).detail
    assert isinstance(detail, BeaconStats)
    return detail


async def ask(port: int, datagram: bytes = PROBE) -> bytes:
    """Send one datagram to the beacon on ``port``; the first datagram back."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(datagram, ("127.0.0.1", port))
        data, _ = await sock.recvfrom(65536)
        return bytes(data)


def answer_bytes(**changes: Any) -> bytes:
    fields = dict(
        name="fake", host="fakehost", pid=1, scheme="tcp", listen_host="0.0.0.0",
        port=7000, protocol=PROTOCOL_VERSION, secret_required=False, version="",
    )
    fields.update(changes)
    return MAGIC + json.dumps(fields).encode()


async def fake_answerer(
    sock: trio.socket.SocketType, answers: list[bytes], *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Answers every probe with each of ``answers``, in order."""
    task_status.started()
    while True:
        data, sender = await sock.recvfrom(2048)
        if data == PROBE:
            for answer in answers:
                await sock.sendto(answer, sender)


@asynccontextmanager
async def open_fake(answers: list[bytes]) -> AsyncIterator[int]:
    """A plain UDP socket answering probes with ``answers``; yields its port."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        async with trio.open_nursery() as nursery:
            await nursery.start(fake_answerer, sock, answers)
            yield sock.getsockname()[1]
            nursery.cancel_scope.cancel()


async def test_a_beacon_answers_discover_with_its_address_and_announcement() -> None:
    port = free_udp_port()
    async with open_beacon(address="tcp://127.0.0.1:5901", port=port, announce_name="cp-1") as (ready, ref):
        assert ready == f"answering probes on udp://127.0.0.1:{port}"
        with trio.fail_after(PATIENCE):
            address, announcement = await discover(port=port, targets=["127.0.0.1"])
        assert address == "tcp://127.0.0.1:5901"
        assert announcement == Announcement(
            name="cp-1", host=socket.gethostname(), pid=os.getpid(), scheme="tcp",
            listen_host="127.0.0.1", port=5901, protocol=PROTOCOL_VERSION,
            secret_required=False, version=fastworker.__version__,
        )
        stats = await beacon_stats(ref)
        assert stats.available and stats.listening == f"udp://127.0.0.1:{port}"
        assert stats.probes_total >= 1 and stats.answers_total >= 1
        assert stats.dropped_total == 0


async def test_a_control_plane_on_every_interface_is_dialled_at_the_answers_source() -> None:
    port = free_udp_port()
    async with open_beacon(address="tls+tcp://0.0.0.0:6100", port=port, secret="x"):
        with trio.fail_after(PATIENCE):
            address, announcement = await discover(port=port, targets=["127.0.0.1"])
    assert address == "tls+tcp://127.0.0.1:6100"
    assert announcement.listen_host == "0.0.0.0" and announcement.scheme == "tls+tcp"
    assert announcement.secret_required


def test_address_from_prefers_a_named_listen_host_and_brackets_ipv6() -> None:
    base = Announcement(name="n", host="h", pid=1, scheme="tcp", listen_host="10.0.0.7",
                        port=5555, protocol=1, secret_required=False, version="")
    assert base.address_from("192.168.1.2") == "tcp://10.0.0.7:5555"
    for unspecified in ("0.0.0.0", "::", "*", ""):
        wildcard = attrs.evolve(base, listen_host=unspecified)
        assert wildcard.address_from("192.168.1.2") == "tcp://192.168.1.2:5555"
        assert wildcard.address_from("fe80::1") == "tcp://[fe80::1]:5555"
    assert attrs.evolve(base, listen_host="::1").address_from("x") == "tcp://[::1]:5555"


async def test_the_secret_is_never_in_the_answer_only_that_one_is_required() -> None:
    port = free_udp_port()
    async with open_beacon(address="tcp://127.0.0.1:5555", port=port, secret="s3cret-value"):
        with trio.fail_after(PATIENCE):
            data = await ask(port)
    assert data.startswith(MAGIC) and b"s3cret-value" not in data
    fields = json.loads(data[len(MAGIC):])
    assert fields["secret_required"] is True
    assert set(fields) == {f.name for f in attrs.fields(Announcement)}


async def test_a_secret_file_is_announced_as_required_and_never_read(tmp_path: Any) -> None:
    port = free_udp_port()
    missing = tmp_path / "no-such-file"
    async with open_beacon(address="tcp://127.0.0.1:5555", port=port, secret_file=str(missing)):
        with trio.fail_after(PATIENCE):
            _, announcement = await discover(port=port, targets=["127.0.0.1"])
    assert announcement.secret_required


async def test_bad_datagrams_are_dropped_and_counted_and_probes_still_answered() -> None:
    port = free_udp_port()
    bad = [b"garbage", b"FWDISC2 ?", PROBE + b"?", b"\x00" * 60000, answer_bytes(), b""]
    async with open_beacon(address="tcp://127.0.0.1:5555", port=port) as (_, ref):
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            for datagram in bad:
                await sock.sendto(datagram, ("127.0.0.1", port))
            await sock.sendto(PROBE, ("127.0.0.1", port))  # behind them, in order
            with trio.fail_after(PATIENCE):
                data, _ = await sock.recvfrom(65536)
        assert data.startswith(MAGIC + b"{")
        stats = await beacon_stats(ref)
        assert stats.dropped_total == len(bad)
        assert (stats.probes_total, stats.answers_total) == (1, 1)


async def test_a_taken_port_leaves_the_beacon_idle_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="fastworker.discovery"):
            async with open_beacon(address="tcp://127.0.0.1:5555", port=port) as (ready, ref):
                assert ready == f"discovery unavailable: cannot bind udp://127.0.0.1:{port}"
                stats = await beacon_stats(ref)  # alive and answering calls
        assert not stats.available and stats.listening == ""
    warnings = [r.getMessage() for r in caplog.records if r.name == "fastworker.discovery"]
    assert len(warnings) == 1
    assert str(port) in warnings[0] and "FASTWORKER_DISCOVERY_PORT" in warnings[0]


async def test_a_second_beacon_on_the_same_port_does_not_share_it() -> None:
    port = free_udp_port()
    async with open_beacon(address="tcp://127.0.0.1:5555", port=port, announce_name="first"):
        async with open_beacon(address="tcp://127.0.0.1:6666", port=port) as (ready, _):
            assert ready is not None and ready.startswith("discovery unavailable")
            with trio.fail_after(PATIENCE):
                _, announcement = await discover(port=port, targets=["127.0.0.1"])
    assert announcement.name == "first"


async def test_port_zero_or_an_address_without_a_port_turns_the_beacon_off() -> None:
    async with open_beacon(address="tcp://127.0.0.1:5555", port=0) as (ready, ref):
        assert ready == "discovery off"
        assert not (await beacon_stats(ref)).available
    async with open_beacon(address="ipc:///tmp/fastworker.sock") as (ready, _):
        assert ready == "discovery off"


def test_a_beacon_is_configured_like_any_actor_from_toml_shaped_data() -> None:
    data = {"actors": {"beacon": {
        "kind": "fastworker.discovery:Beacon",
        "address": "tcp://0.0.0.0:5555",
        "port": "${FASTWORKER_DISCOVERY_PORT:-5550}",
    }}}
    (resolved,) = Topology.from_mapping(data, environ={"FASTWORKER_DISCOVERY_PORT": "6001"}).resolve()
    assert resolved.options.port == 6001
    with pytest.raises(Exception, match="port"):
        Topology.from_mapping({"actors": {"b": {
            "kind": "fastworker.discovery:Beacon", "address": "tcp://h:5555", "port": 70000,
        }}}).resolve()
    with pytest.raises(Exception, match="not a number"):
        Topology.from_mapping({"actors": {"b": {
            "kind": "fastworker.discovery:Beacon", "address": "tcp://h:fifty",
        }}}).resolve()


async def test_discover_times_out_naming_targets_port_and_the_way_out() -> None:
    port = free_udp_port()
    with trio.fail_after(PATIENCE), pytest.raises(DiscoveryTimeout) as caught:
        await discover(port=port, targets=["127.0.0.1"], timeout=0.3, interval=0.1)
    message = str(caught.value)
    assert f"UDP port {port}" in message and "127.0.0.1" in message and "0.3 s" in message
    assert "FASTWORKER_ADDRESS" in message
    assert caught.value.mismatched == []


async def test_an_answer_of_another_protocol_is_skipped_and_named_in_the_timeout() -> None:
    other = PROTOCOL_VERSION + 1
    junk = [b"junk", MAGIC + b"[1]", MAGIC + b"{not json", answer_bytes(port="x")]
    async with open_fake([*junk, answer_bytes(protocol=other)]) as port:
        with trio.fail_after(PATIENCE), pytest.raises(DiscoveryTimeout) as caught:
            await discover(port=port, targets=["127.0.0.1"], timeout=0.3, interval=0.1)
    assert caught.value.mismatched == [("tcp://127.0.0.1:7000", other)]
    assert (
        f"found a control plane at tcp://127.0.0.1:7000 speaking protocol {other}, "
        f"this is protocol {PROTOCOL_VERSION}"
    ) in str(caught.value)


async def test_the_first_answer_of_this_protocol_wins_over_other_protocols() -> None:
    answers = [answer_bytes(protocol=PROTOCOL_VERSION + 1, port=1), answer_bytes(port=2)]
    async with open_fake(answers) as port:
        with trio.fail_after(PATIENCE):
            address, announcement = await discover(port=port, targets=["127.0.0.1"])
    assert address == "tcp://127.0.0.1:2" and announcement.protocol == PROTOCOL_VERSION


async def test_unreachable_targets_are_skipped() -> None:
    port = free_udp_port()
    async with open_beacon(address="tcp://127.0.0.1:5555", port=port):
        with trio.fail_after(PATIENCE):
            address, _ = await discover(port=port, targets=["::1", "0.0.0.1", "127.0.0.1"])
    assert address == "tcp://127.0.0.1:5555"


async def test_the_port_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_udp_port()
    monkeypatch.setenv("FASTWORKER_DISCOVERY_PORT", str(port))
    async with open_beacon(address="tcp://127.0.0.1:5555", port=port):
        with trio.fail_after(PATIENCE):
            address, _ = await discover(targets=["127.0.0.1"])
    assert address == "tcp://127.0.0.1:5555"
    monkeypatch.setenv("FASTWORKER_DISCOVERY_PORT", "fifty")
    with pytest.raises(ValueError, match="FASTWORKER_DISCOVERY_PORT"):
        await discover(targets=["127.0.0.1"])
    monkeypatch.delenv("FASTWORKER_DISCOVERY_PORT")
    assert probe.discovery_port() == probe.DEFAULT_DISCOVERY_PORT


def test_default_targets_are_loopback_broadcast_and_each_interfaces_broadcast() -> None:
    targets = default_targets()
    assert targets[:2] == ["127.0.0.1", "255.255.255.255"]
    assert len(targets) == len(set(targets))
    for target in targets:
        socket.inet_aton(target)  # each a dotted IPv4 address


async def test_discover_runs_under_asyncio_too() -> None:
    port = free_udp_port()

    async def find() -> tuple[str, Announcement]:
        with anyio.fail_after(PATIENCE):
            return await discover(port=port, targets=["127.0.0.1"], interval=0.1)

    async with open_beacon(address="tcp://127.0.0.1:5999", port=port, announce_name="for-asyncio"):
        address, announcement = await trio.to_thread.run_sync(
            lambda: anyio.run(find, backend="asyncio")
        )
    assert address == "tcp://127.0.0.1:5999" and announcement.name == "for-asyncio"


class _Flag(logging.Handler):
    """Sets a trio event on the first record whose message holds ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_discover_forever_warns_while_looking_and_returns_once_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_udp_port()
    logger = logging.getLogger("test.discovery")
    flag = _Flag("still looking")
    logger.addHandler(flag)
    try:
        found: list[tuple[str, Announcement]] = []
        answered = trio.Event()

        async def look() -> None:
            found.append(await discover_forever(
                log=logger, what="subworker w1", port=port, every=0.2, interval=0.05,
                targets=["127.0.0.1"],
            ))
            answered.set()

        with caplog.at_level(logging.WARNING, logger="test.discovery"), trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(look)
                await flag.seen.wait()
                async with open_beacon(address="tcp://127.0.0.1:5777", port=port):
                    await answered.wait()  # returns by itself once the beacon answers
    finally:
        logger.removeHandler(flag)
    assert found[0][0] == "tcp://127.0.0.1:5777"
    message = caplog.records[0].getMessage()
    assert message.startswith("subworker w1: still looking for a control plane (probing 127.0.0.1")
    assert f"on UDP port {port} for " in message
    assert message.endswith("set FASTWORKER_ADDRESS to give its address")


async def test_discover_forever_never_gives_up_until_cancelled() -> None:
    logger = logging.getLogger("test.discovery.cancel")
    flag = _Flag("still looking")
    logger.addHandler(flag)
    try:
        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: discover_forever(
                    log=logger, what="client", port=free_udp_port(), every=0.1,
                    targets=["127.0.0.1"],
                ))
                await flag.seen.wait()
                flag.seen = trio.Event()
                await flag.seen.wait()  # a second warning: still going
                nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(flag)


def test_the_beacon_announces_the_per_host_secret_on_plain_tcp_only() -> None:
    """``secret_required`` counts the per-host secret (``auto``) on a plain
    TCP control plane; over TLS it may give way to mutual TLS, which the
    beacon cannot see, so only a secret set on purpose is announced."""
    from fastworker.discovery import BeaconOptions, _secret_required

    def required(scheme: str, **secret: str) -> bool:
        return _secret_required(
            BeaconOptions(address=f"{scheme}://127.0.0.1:5555", **secret), scheme)

    assert required("tcp", secret_file="auto")
    assert not required("tls+tcp", secret_file="auto")
    assert required("tls+tcp", secret="s3cret")
    assert not required("tcp", secret_file="none")
