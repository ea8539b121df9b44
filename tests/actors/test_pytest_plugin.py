"""actors.pytest_plugin: free ports for tests over real sockets. The kernel
is stubbed where a test needs it to offer a port again."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from actors import pytest_plugin
from actors.pytest_plugin import free_tcp_port, free_tcp_ports


@pytest.fixture
def offers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The ports the stubbed kernel offers, in order; every port binds, and
    nothing was handed out before."""
    offered: list[int] = []
    monkeypatch.setattr(pytest_plugin, "_kernel_pick", lambda: offered.pop(0))
    monkeypatch.setattr(pytest_plugin, "_all_free", lambda ports: True)
    monkeypatch.setattr(pytest_plugin, "_handed_out", set())
    yield offered


def test_a_port_offered_again_is_not_handed_out_twice(offers: list[int]) -> None:
    """A node's six ports picked and not yet bound, the kernel may offer one
    of them again: the next pick passes over them."""
    offers.extend([40000, 40000, 40003, 40006])
    node = free_tcp_ports(6)
    dashboard = free_tcp_port()
    assert (node, dashboard) == (40000, 40006)


def test_ranges_that_overlap_an_earlier_pick_are_passed_over(offers: list[int]) -> None:
    offers.extend([40010, 40005, 40016])
    assert free_tcp_port() == 40010
    assert free_tcp_ports(6) == 40016  # 40005..40010 would take 40010 again


def test_the_ports_picked_can_be_bound() -> None:
    """Without stubs: consecutive ports that bind, apart from the previous pick."""
    first = free_tcp_ports(6)
    second = free_tcp_ports(6)
    assert not set(range(first, first + 6)) & set(range(second, second + 6))
    listeners = []
    try:
        for port in range(second, second + 6):
            listener = socket.socket()
            listeners.append(listener)
            listener.bind(("127.0.0.1", port))
    finally:
        for listener in listeners:
            listener.close()
