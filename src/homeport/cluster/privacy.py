"""The environment that keeps Ray offline and authenticated.

Ray posts a usage ping and probes cloud-metadata addresses (169.254.169.254, metadata.google.internal)
from its dashboard and autoscaler code even with usage stats off. homeport sets, before Ray is
imported and for every process Ray starts from here: usage stats off, the report URL and every HTTP
proxy variable pointed at a closed loopback port (so a stray request fails at once, on `lo`),
`no_proxy` for loopback and the cluster's own addresses (their traffic must not go to that proxy),
and Ray's token authentication. Run `python -m homeport.cluster.privacy ADDR...` to print the same
variables as `export` lines for `ray start` on each machine.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable

# Port 9 (discard) on loopback: nothing listens there, so a connection is refused immediately.
CLOSED_PORT_URL = "http://127.0.0.1:9"
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_LOOPBACK = ("localhost", "127.0.0.1", "127.0.0.0/8", "::1")
TOKEN_VARIABLE = "RAY_AUTH_TOKEN"


def ray_environment(cluster_hosts: Iterable[str] = (), token: str | None = None) -> dict[str, str]:
    """The variables to set; `cluster_hosts`: the nodes' addresses (host or host:port)."""
    hosts = [_host(h) for h in cluster_hosts if h and h != "local"]
    no_proxy = ",".join(dict.fromkeys([*_LOOPBACK, *hosts]))
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
        "RAY_USAGE_STATS_REPORT_URL": CLOSED_PORT_URL + "/",
        "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
        "RAY_AUTH_MODE": "token",
        "no_proxy": no_proxy,
        "NO_PROXY": no_proxy,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    env.update({name: CLOSED_PORT_URL for name in _PROXY_VARIABLES})
    if token is not None:
        env[TOKEN_VARIABLE] = token
    return env


def apply(cluster_hosts: Iterable[str] = ()) -> dict[str, str]:
    """Set the variables in this process (inherited by what it starts). An existing RAY_AUTH_TOKEN
    (or RAY_AUTH_TOKEN_PATH) is kept: connecting to a cluster needs that cluster's token."""
    env = ray_environment(cluster_hosts)
    os.environ.update(env)
    return env


def new_token() -> str:
    """A token for a new cluster (Ray accepts any string; this one has 256 random bits)."""
    return secrets.token_hex(32)


def _host(address: str) -> str:
    address = address.strip()
    if address.startswith("["):  # [::1]:6379
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def main(argv: list[str]) -> int:
    """Print `export` lines for `ray start`: the addresses given, and a new token with --new-token."""
    token = new_token() if "--new-token" in argv else None
    hosts = [a for a in argv if not a.startswith("--")]
    for name, value in ray_environment(hosts, token).items():
        print(f"export {name}='{value}'")
    if token is None:
        print(f"# and {TOKEN_VARIABLE} (or RAY_AUTH_TOKEN_PATH): the cluster's token, the same on every machine")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

