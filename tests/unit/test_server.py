"""Binding (the reference API's addresses, one port for all, port 0) and the drain's signal handling."""

from __future__ import annotations

import signal
import socket

import pytest
import uvicorn

from homeport.api.drain import Drain
from homeport.errors import StartupError
from homeport.server import DrainingServer, _origin, bind_listeners
from homeport.settings import Settings


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")


@pytest.mark.parametrize(
    "settings,hosts",
    [
        ({}, ("127.0.0.1",)),
        ({"listen": True}, ("0.0.0.0",)),
        ({"api_enable_ipv6": True}, ("::1", "127.0.0.1")),
        ({"api_enable_ipv6": True, "listen": True}, ("::", "0.0.0.0")),
        ({"api_enable_ipv6": True, "api_disable_ipv4": True}, ("::1",)),
        ({"api_disable_ipv4": True}, ()),
        ({"listen_host": "10.0.0.5", "api_enable_ipv6": True}, ("10.0.0.5",)),
    ],
)
def test_bind_hosts_follow_the_reference(settings, hosts):
    assert Settings(**settings).bind_hosts == hosts


def test_port_zero_binds_a_free_port():
    (listener,) = bind_listeners(("127.0.0.1",), 0)
    with listener:
        assert listener.getsockname()[1] > 0


@needs_ipv6
def test_ipv6_and_ipv4_share_one_port():
    listeners = bind_listeners(("::1", "127.0.0.1"), 0)
    try:
        v6, v4 = listeners
        assert v6.getsockname()[1] == v4.getsockname()[1]
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in listeners:
            sock.close()


def test_no_address_left_is_a_start_up_error():
    with pytest.raises(StartupError, match="enable IPv6 or IPv4"):
        bind_listeners((), 5000)


def test_a_taken_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_listeners(("127.0.0.1",), port)


def draining_server(started: bool = True) -> DrainingServer:
    server = DrainingServer(uvicorn.Config(app=None), Drain(), timeout=1)
    server.started = started
    return server


def test_the_first_signal_drains_and_the_second_exits_at_once(monkeypatch):
    exits: list[int] = []
    monkeypatch.setattr("homeport.server.os._exit", exits.append)
    server = draining_server()
    killed: list[str] = []
    server.on_force_exit.append(lambda: killed.append("tunnel"))
    server.handle_exit(signal.SIGTERM, None)
    assert not server.should_exit and not exits  # the drain runs first (started by the next tick)
    server.handle_exit(signal.SIGINT, None)
    assert exits == [1] and killed == ["tunnel"]
    # uvicorn would raise recorded signals again after serving: SIGTERM would then kill us.
    assert server._captured_signals == []


def test_a_signal_during_start_up_stops_at_once():
    server = draining_server(started=False)
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit


async def test_the_tick_runs_the_drain_then_lets_uvicorn_shut_down():
    server = draining_server()
    assert await server.on_tick(0) is False
    server.handle_exit(signal.SIGTERM, None)
    assert await server.on_tick(1) is False
    await server._drain_task
    assert server.drain.draining
    assert await server.on_tick(2) is True


@needs_ipv6
@pytest.mark.parametrize(
    "hosts,origin",
    [
        (("127.0.0.1",), "127.0.0.1"),
        (("::1", "127.0.0.1"), "127.0.0.1"),
        (("::1",), "[::1]"),
        (("0.0.0.0",), "127.0.0.1"),
        (("::",), "[::1]"),
    ],
)
def test_the_tunnel_reaches_a_bound_loopback_address(hosts, origin):
    listeners = bind_listeners(hosts, 0)
    try:
        assert _origin(listeners) == f"{origin}:{listeners[0].getsockname()[1]}"
    finally:
        for sock in listeners:
            sock.close()
