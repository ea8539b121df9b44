"""pytest fixtures for testing actors and topologies (loaded automatically
through the ``pytest11`` entry point once the package is installed)."""

from __future__ import annotations

import socket

import pytest

#: The ports this process has handed out. A port picked and not yet bound
#: looks free to the kernel, which may offer it again; remembering them is
#: what keeps two picks in a row (a node's six, then a dashboard's) apart.
_handed_out: set[int] = set()


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and that no
    earlier pick of this process returned."""
    return free_tcp_ports(1)


def free_tcp_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports on 127.0.0.1 that were
    all free a moment ago (for a node listening on base+0..base+N), none of
    them returned by an earlier pick of this process.

    Where a server can bind port 0 and say which port it got, prefer that:
    no pick is needed at all."""
    for _ in range(200):
        base = _kernel_pick()
        ports = range(base, base + count)
        if base + count > 65535 or not _handed_out.isdisjoint(ports) or not _all_free(ports):
            continue
        _handed_out.update(ports)
        return base
    raise RuntimeError(f"found no {count} consecutive free ports on 127.0.0.1")


def _kernel_pick() -> int:
    """A port the kernel calls free now (it binds port 0 and lets it go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _all_free(ports: range) -> bool:
    """Whether each of ``ports`` can be bound on 127.0.0.1 now."""
    probes = []
    try:
        for port in ports:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        for probe in probes:
            probe.close()
    return True


@pytest.fixture
def free_port() -> int:
    """A free TCP port on the loopback address."""
    return free_tcp_port()


@pytest.fixture
def loopback_address(free_port: int) -> str:
    """An NNG address on a free loopback port: ``tcp://127.0.0.1:PORT``."""
    return f"tcp://127.0.0.1:{free_port}"
