"""pytest fixtures for testing actors and topologies (loaded automatically
through the ``pytest11`` entry point once the package is installed)."""

from __future__ import annotations

import socket

import pytest


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_tcp_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports on 127.0.0.1 that were
    all free a moment ago (for a node listening on base+0..base+N)."""
    for _ in range(200):
        base = free_tcp_port()
        if base + count > 65535:
            continue
        probes = []
        try:
            for port in range(base, base + count):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return base
    raise RuntimeError(f"found no {count} consecutive free ports on 127.0.0.1")


@pytest.fixture
def free_port() -> int:
    """A free TCP port on the loopback address."""
    return free_tcp_port()


@pytest.fixture
def loopback_address(free_port: int) -> str:
    """An NNG address on a free loopback port: ``tcp://127.0.0.1:PORT``."""
    return f"tcp://127.0.0.1:{free_port}"
