"""The Host-header check (DNS-rebinding protection): on while homeport listens on loopback only."""

from __future__ import annotations

import httpx
import pytest

from homeport.api.host_check import allowed_host, host_check_needed
from homeport.settings import Settings


async def get_models(client, host: str) -> httpx.Response:
    return await client.http.get("/v1/models", headers={"Host": host})


async def test_a_foreign_host_is_refused_in_the_openai_envelope(client):
    response = await get_models(client, "attacker.example:5000")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("Invalid host header")
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, "invalid_host")


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:5000", "LocalHost:1", "127.0.0.1", "127.0.0.1:8080", "127.4.5.6:5000", "[::1]", "[::1]:5000"],
)
async def test_loopback_hosts_are_allowed_with_any_port(client, host):
    assert (await get_models(client, host)).status_code == 200


@pytest.mark.parametrize(
    "host",
    ["", "example.com", "localhost.example.com", "127.0.0.1.nip.io", "10.0.0.5:5000", "[::2]:5000", "[::1", "0.0.0.0"],
)
def test_other_hosts_are_not_allowed(host):
    assert not allowed_host(host)


async def test_the_check_is_off_when_listening_beyond_loopback(make_client):
    client = make_client(listen=True)
    assert (await get_models(client, "my-server.lan:5000")).status_code == 200


@pytest.mark.parametrize(
    "settings,needed",
    [
        ({}, True),
        ({"api_enable_ipv6": True}, True),
        ({"listen_host": "127.0.0.1"}, True),
        ({"listen_host": "localhost"}, True),
        ({"listen_host": "::1"}, True),
        ({"listen": True}, False),
        ({"listen_host": "10.0.0.5"}, False),
        ({"listen_host": "::"}, False),
        ({"public_api": True}, False),
    ],
)
def test_when_the_check_applies(settings, needed):
    assert host_check_needed(Settings(**settings)) is needed
