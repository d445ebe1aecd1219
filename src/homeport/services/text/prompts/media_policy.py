"""Which image URLs homeport may fetch: the policy (`--allow-remote-media`,
`--remote-media-allow-private`) and the SSRF guard that every hop of a fetch goes through.

A URL comes from the client, and the server may sit next to things the client must not reach
(loopback services, the LAN, a cloud metadata endpoint). A host is resolved here, once, and every
address it resolves to must be public; `remote_media` then connects to those very addresses.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from homeport.errors import InvalidRequestError

# Names that reach a cloud provider's instance metadata (credentials live there) whatever they resolve to.
_METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # a NAT64 gateway would forward these to the embedded IPv4
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))  # quote only spaces, controls and non-ASCII
_PRIVATE_FLAG = "--remote-media-allow-private"

Resolver = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class MediaPolicy:
    """Whether image URLs are fetched, and from where. Built from the settings in the container."""

    allow_remote: bool = False  # --allow-remote-media
    allow_private: bool = False  # --remote-media-allow-private: loopback, private, link-local too
    connect_timeout: float = 5.0
    read_timeout: float = 20.0  # for the whole fetch of one image, redirects included
    resolve: Resolver | None = None  # host -> addresses; None: the system resolver (tests inject one)


OFFLINE = MediaPolicy()


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA), lower case, no brackets
    port: int
    path: str  # path and query, as sent in the request line


def parse_target(url: str, param: str) -> Target:
    """Refuses every scheme but http and https (file:, ftp:, gopher: … are never fetched)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").rstrip(".")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise InvalidRequestError("the image URL is not valid", param=param) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        never = f"never {scheme or 'scheme-less'}: URLs"
        raise InvalidRequestError(f"homeport fetches only http(s) image URLs, {never}", param=param)
    if not host:
        raise InvalidRequestError("the image URL has no host", param=param)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def checked_addresses(target: Target, policy: MediaPolicy, param: str) -> list[str]:
    """The addresses `target.host` stands for, once resolved; all of them must be allowed (a host
    with one public and one private address is refused, whichever a later lookup would pick)."""
    if not policy.allow_private and target.host in _METADATA_HOSTS:
        raise InvalidRequestError(
            f"the image URL's host {target.host} is a cloud metadata endpoint; homeport does not fetch from it "
            f"unless started with {_PRIVATE_FLAG}", param=param,
        )
    addresses = [target.host] if _ip(target.host) else _resolve(target.host, policy)
    if not addresses:
        raise InvalidRequestError(f"the image URL's host {target.host} could not be resolved", param=param)
    if not policy.allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise InvalidRequestError(
                    f"the image URL's host {target.host} is a {problem} address; homeport fetches from loopback, "
                    f"private and link-local addresses only when started with {_PRIVATE_FLAG}", param=param,
                )
    return addresses


def address_problem(address: str) -> str | None:
    """The kind of a non-public address ("loopback", "private", …), or None for a public one."""
    ip = _ip(address)
    if ip is None:
        return "non-IP"
    if isinstance(ip, ipaddress.IPv6Address):
        # Forms that carry an IPv4 address to be reached: judged by that address.
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        embedded = ip.ipv4_mapped or ip.sixtofour or nat64
        if embedded is not None:
            return address_problem(str(embedded))
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-public"  # e.g. 100.64.0.0/10 (carrier-grade NAT)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return None


def _resolve(host: str, policy: MediaPolicy) -> list[str]:
    if policy.resolve is not None:
        return list(dict.fromkeys(policy.resolve(host)))
    # getaddrinfo has no timeout of its own: run it in a thread and stop waiting after the connect timeout.
    found: dict[str, object] = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            found["infos"] = []

    thread = threading.Thread(target=lookup, name="homeport-resolve", daemon=True)
    thread.start()
    thread.join(policy.connect_timeout)
    infos = found.get("infos") or []
    return list(dict.fromkeys(info[4][0] for info in infos))  # type: ignore[union-attr]
