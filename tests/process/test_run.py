"""``fastworker run`` as a user runs it: real processes on free loopback ports.

Every wait is on the process, for a line it writes or for its exit; ``GUARD``
only turns a hang into a failure that shows what the process wrote. Every
process a test starts is killed and reaped when the test ends, however it
ends. Topology files live in ``topologies/`` and are named relative to the
repository root, the working directory of every process, so error lines
read as a user would see them.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from actors.topology import known_kinds
from tests.process.harness import (
    GUARD,
    LISTENER,
    PING_SIDE,
    PINGPONG,
    PONG_SIDE,
    ROOT,
    STUCK,
    TOPOLOGIES,
    Running,
    command,
    env,
    fastworker_run,
    log_messages,
    run_to_exit,
    text_lines,
)


class TestCheck:
    async def test_check_lists_the_actors_in_start_order(
        self, env: dict[str, str], loopback_address: str
    ) -> None:
        """--check validates the file, names its actors in start order and exits 0."""
        env["PINGPONG_ADDRESS"] = loopback_address

        result = await run_to_exit("--check", PINGPONG, env=env)

        assert text_lines(result.stdout) == [
            "examples/pingpong.toml: ok (4 actors: ping_edge, ping, pong, pong_edge)"
        ]
        assert result.stderr == b""
        assert result.returncode == 0


def _unknown_kind_line() -> str:
    kinds = ", ".join(known_kinds())
    return (
        f"{TOPOLOGIES}/unknown_kind.toml: $.actors.edge.kind: unknown kind 'actors.Edg'; "
        f"did you mean 'actors.Edge'? known kinds: {kinds} "
        "(a kind is a registered short name or 'package.module:Class')"
    )


CONFIG_ERRORS = {
    "bad_syntax": [
        f"{TOPOLOGIES}/bad_syntax.toml: invalid TOML: "
        "Expected '=' after a key in a key/value pair (at line 3, column 5)"
    ],
    "unknown_kind": [_unknown_kind_line()],
    "unknown_option": [
        f"{TOPOLOGIES}/unknown_option.toml: $.actors.ping: unknown option 'intervall' "
        "(did you mean 'interval'?); known options: count, interval"
    ],
    "missing_option": [
        f"{TOPOLOGIES}/missing_option.toml: $.actors.edge.codec: required option missing"
    ],
    "wrong_type": [
        f"{TOPOLOGIES}/wrong_type.toml: $.actors.ping.interval: expected a number, got 'fast'"
    ],
    "missing_actor": [
        f"{TOPOLOGIES}/missing_actor.toml: $.actors.ping.refs.peer: no actor named 'pnog'; "
        "did you mean 'pong'? (actors: ping, pong)"
    ],
    "unset_env": [
        f"{TOPOLOGIES}/unset_env.toml: $.actors.edge.address: environment variable "
        "FASTWORKER_TEST_UNSET_ADDRESS is not set and has no default "
        "(write ${FASTWORKER_TEST_UNSET_ADDRESS:-default} to give one)"
    ],
    "several_problems": [
        f"{TOPOLOGIES}/several_problems.toml: $.actors.ping.interval: "
        "expected a number, got 'fast'",
        f"{TOPOLOGIES}/several_problems.toml: $.actors.ping.refs.peer: no actor named 'pnog'; "
        "did you mean 'pong'? (actors: ping, pong)",
    ],
    "missing_file": [f"{TOPOLOGIES}/missing_file.toml: no such file"],
}


class TestConfigErrors:
    @pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
    @pytest.mark.parametrize("name", list(CONFIG_ERRORS))
    async def test_config_error_prints_one_line_per_problem_and_exits_2(
        self, env: dict[str, str], name: str, check: bool
    ) -> None:
        """A wrong topology file is reported as readable lines on stderr, one per
        problem, never a traceback, and the exit code is 2."""
        file = f"{TOPOLOGIES}/{name}.toml"
        args = ("--check", file) if check else (file,)

        result = await run_to_exit(*args, env=env)

        assert text_lines(result.stderr) == CONFIG_ERRORS[name]
        assert result.stdout == b""
        assert result.returncode == 2


class TestPingpong:
    async def test_runs_until_sigint_then_stops_gracefully(
        self, env: dict[str, str], loopback_address: str
    ) -> None:
        """pingpong.toml starts each actor once, in start order, pongs, and a
        SIGINT stops it gracefully with exit code 0."""
        env["PINGPONG_ADDRESS"] = loopback_address
        env["PINGPONG_INTERVAL"] = "0"

        async with fastworker_run(PINGPONG, env) as node:
            await node.wait_for("pong 3 after")
            code = await node.stop(signal.SIGINT)

        assert code == 0, node.tail
        assert "Traceback" not in node.output
        started = [m for m in log_messages(node.lines, "actors.supervisor") if "started" in m]
        assert started == [
            f"started ping_edge (actors.Edge): listening on {loopback_address}",
            "started ping (examples.pingpong:Pinger): pinging every 0 s",
            "started pong (examples.pingpong:Ponger)",
            f"started pong_edge (actors.Edge): dialing {loopback_address}",
        ]
        node_log = log_messages(node.lines, "actors.node")
        assert node_log[0] == "node pingpong ready with 4 actors"
        assert "SIGINT received: stopping gracefully" in node_log
        assert node_log[-1] == "node pingpong stopped"

    async def test_second_signal_stops_at_once_with_128_plus_signal(
        self, env: dict[str, str]
    ) -> None:
        """When a graceful stop cannot finish, a second SIGINT stops the node at
        once and the exit code is 130 (128 + SIGINT)."""
        async with fastworker_run(STUCK, env) as node:
            await node.wait_for("node stuck ready with 1 actors")
            node.send_signal(signal.SIGINT)
            await node.wait_for("SIGINT received: stopping gracefully")
            await node.wait_for("stuck is draining forever")
            code = await node.stop(signal.SIGINT)

        assert code == 128 + signal.SIGINT, node.tail
        assert "second SIGINT: stopping at once" in log_messages(node.lines, "actors.node")
        assert "Traceback" not in node.output


class TestStartFailure:
    async def test_address_in_use_fails_to_start_with_exit_1(
        self, env: dict[str, str], loopback_address: str
    ) -> None:
        """A second node listening on an address in use says which actor failed
        and why, in one line, and exits 1."""
        env["PINGPONG_ADDRESS"] = loopback_address

        async with fastworker_run(LISTENER, env) as first:
            await first.wait_for("node listener ready")
            second = await run_to_exit(LISTENER, env=env)
            assert await first.stop() == 0, first.tail

        lines = text_lines(second.stderr)
        assert log_messages(lines, "fastworker") == [
            f"actor edge failed to start: OSError: cannot listen on {loopback_address}: "
            "Address in use"
        ]
        assert "Traceback" not in second.stderr.decode()
        assert second.returncode == 1

    @pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
    async def test_listening_beyond_loopback_without_a_secret_is_refused(
        self, env: dict[str, str], free_port: int, check: bool
    ) -> None:
        """An edge refuses to listen on 0.0.0.0 without a shared secret: a config
        error (exit 2, found by --check too) that says how to fix it."""
        env["PINGPONG_ADDRESS"] = f"tcp://0.0.0.0:{free_port}"

        result = await run_to_exit(LISTENER, *(["--check"] if check else []), env=env)

        assert text_lines(result.stderr) == [
            f"{LISTENER}: $.actors.edge: refusing to listen on "
            f"tcp://0.0.0.0:{free_port} without a shared secret or mutual TLS: set a secret "
            "(FASTWORKER_SECRET, or the edge's `secret` / `secret_file` option), use mutual TLS "
            "(a tls+tcp:// address with a client CA: FASTWORKER_TLS_CA, or the edge's "
            f"`tls.ca_file`), or listen on a loopback address such as tcp://127.0.0.1:{free_port}"
        ]
        assert result.returncode == 2


@asynccontextmanager
async def two_sides(
    env: dict[str, str], address: str, ping_secret: str | None, pong_secret: str | None
) -> AsyncIterator[tuple[Running, Running]]:
    """pingpong split across two processes: ping_side listens, pong_side dials."""

    def side_env(secret: str | None) -> dict[str, str]:
        environ = dict(env, PINGPONG_ADDRESS=address)
        if secret is not None:
            environ["FASTWORKER_SECRET"] = secret
        return environ

    async with fastworker_run(PING_SIDE, side_env(ping_secret)) as ping_side:
        await ping_side.wait_for("node ping_side ready")
        async with fastworker_run(PONG_SIDE, side_env(pong_secret)) as pong_side:
            yield ping_side, pong_side


def with_tracebacks(*nodes: Running) -> list[str]:
    """The files of the nodes whose output shows a traceback."""
    return [node.file for node in nodes if "Traceback" in node.output]


class TestEdgesAcrossProcesses:
    @pytest.mark.parametrize("secret", [None, "s3cret"], ids=["no_secret", "shared_secret"])
    async def test_ping_and_pong_in_two_processes(
        self, env: dict[str, str], loopback_address: str, secret: str | None
    ) -> None:
        """Ping and pong in two processes talk through a pair of edges, signed
        when both have the same secret, and both stop on SIGTERM with exit 0."""
        async with two_sides(env, loopback_address, secret, secret) as (ping_side, pong_side):
            await ping_side.wait_for("done: 5 pongs")
            ping_side.send_signal(signal.SIGTERM)
            pong_side.send_signal(signal.SIGTERM)
            ping_code = await ping_side.wait_exit()
            pong_code = await pong_side.wait_exit()

        assert ping_code == 0, ping_side.tail
        assert pong_code == 0, pong_side.tail
        pongs = [
            m.split(" after ")[0]
            for m in log_messages(ping_side.lines, "examples.pingpong")
            if m.startswith("pong ")
        ]
        assert pongs == [f"pong {n}" for n in range(1, 6)]
        assert log_messages(pong_side.lines, "actors.edge") == []
        assert with_tracebacks(ping_side, pong_side) == []

    @pytest.mark.parametrize(
        ("ping_secret", "pong_secret", "reason"),
        [
            ("s3cret", "other", "bad auth tag"),
            ("s3cret", None, "signed frame, but no shared secret is configured here"),
            (None, "s3cret", "unsigned frame (this end requires a shared secret)"),
        ],
        ids=["different_secrets", "secret_on_ping_side_only", "secret_on_pong_side_only"],
    )
    async def test_frames_that_fail_authentication_are_dropped(
        self,
        env: dict[str, str],
        loopback_address: str,
        ping_secret: str | None,
        pong_secret: str | None,
        reason: str,
    ) -> None:
        """When the two ends disagree on the secret, the receiving edge drops the
        ping with a line naming the peer and the reason, so no pong comes back."""
        async with two_sides(env, loopback_address, ping_secret, pong_secret) as sides:
            ping_side, pong_side = sides
            await pong_side.wait_for("dropped frame")
            ping_side.send_signal(signal.SIGTERM)
            pong_side.send_signal(signal.SIGTERM)
            ping_code = await ping_side.wait_exit()
            pong_code = await pong_side.wait_exit()

        assert log_messages(pong_side.lines, "actors.edge") == [
            f"dropped frame from {loopback_address}: {reason} (1 dropped in the last 60 s)"
        ]
        assert log_messages(ping_side.lines, "examples.pingpong") == []
        assert (ping_code, pong_code) == (0, 0), ping_side.tail + "\n" + pong_side.tail
        assert with_tracebacks(ping_side, pong_side) == []


async def test_a_bad_log_level_is_a_usage_error(env: dict[str, str]) -> None:
    """FASTWORKER_LOG_LEVEL is checked like an option: exit 2, no traceback."""
    env["FASTWORKER_LOG_LEVEL"] = "loud"
    result = await run_to_exit(PINGPONG, env=env)
    assert result.returncode == 2
    assert text_lines(result.stderr)[-1] == (
        "fastworker: error: log level must be DEBUG, INFO, WARNING or ERROR (from --log-level "
        "or FASTWORKER_LOG_LEVEL), got 'LOUD'"
    )
