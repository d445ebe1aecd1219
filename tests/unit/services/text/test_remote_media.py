"""Fetching images by URL: the SSRF guard (every refused address class, each redirect hop checked,
the address pinned), and real fetches from a loopback server (redirects, errors, caps, timeouts)."""

from __future__ import annotations

import pytest

from homeport.errors import InvalidRequestError
from homeport.services.text.prompts import images
from homeport.services.text.prompts.media_policy import MediaPolicy, address_problem, checked_addresses, parse_target
from homeport.services.text.prompts.remote_media import fetch_image, looks_like_image
from support.image_server import image_server
from support.png import CHECKS, GRADIENT

PARAM = "messages[0].content[1].image_url"
PUBLIC = "93.184.216.34"
CAP = images.MAX_IMAGE_BYTES


def refused(call, *needles: str) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        call()
    error = info.value
    assert error.status_code == 400 and error.param == PARAM
    for needle in needles:
        assert needle in error.message, error.message
    return error


@pytest.mark.parametrize(
    "address,kind",
    [
        ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
        ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
        ("fc00::1", "private"), ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        # IPv6 forms that carry an IPv4 address are judged by it
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_named(address, kind):
    assert address_problem(address) == kind


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_problem(address) is None


def policy(mapping: dict[str, list[str]] | None = None) -> MediaPolicy:
    """Remote media on, private off, with a resolver that knows only `mapping` (host -> addresses)."""
    return MediaPolicy(allow_remote=True, resolve=lambda host: (mapping or {}).get(host, []))


@pytest.mark.parametrize(
    "url,needle",
    [
        ("http://127.0.0.1/x.png", "loopback"),
        ("http://[::1]:8080/x.png", "loopback"),
        ("http://[::ffff:127.0.0.1]/x.png", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.7/x.png", "private"),
        ("http://evil.test/x.png", "loopback"),  # a name that resolves to 127.0.0.1
        ("http://mixed.test/x.png", "private"),  # one public, one private address: refused
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://METADATA.google.internal./x", "metadata"),
    ],
)
def test_private_targets_are_refused_naming_the_flag(url, needle):
    rules = policy({"evil.test": ["127.0.0.1"], "mixed.test": [PUBLIC, "10.0.0.1"],
                     "metadata.google.internal": [PUBLIC]})
    refused(lambda: checked_addresses(parse_target(url, PARAM), rules, PARAM), needle, "--remote-media-allow-private")


@pytest.mark.parametrize("host", ["localhost", "127.1", "2130706433", "0x7f.0.0.1", "LOCALHOST."])
def test_spellings_of_loopback_resolve_to_loopback_and_are_refused(host):
    target = parse_target(f"http://{host}/x.png", PARAM)
    refused(lambda: checked_addresses(target, MediaPolicy(allow_remote=True), PARAM), "loopback")


def test_allow_private_lifts_the_address_checks():
    rules = MediaPolicy(allow_remote=True, allow_private=True, resolve=lambda host: ["127.0.0.1"])
    assert checked_addresses(parse_target("http://evil.test/", PARAM), rules, PARAM) == ["127.0.0.1"]
    assert checked_addresses(parse_target("http://metadata.google.internal/", PARAM), rules, PARAM) == ["127.0.0.1"]


def test_an_unresolvable_host_is_a_400():
    refused(lambda: checked_addresses(parse_target("http://nowhere.test/", PARAM), policy(), PARAM), "resolved")


@pytest.mark.parametrize(
    "url,needle",
    [("file:///etc/passwd", "never file:"), ("ftp://example.com/x.png", "never ftp:"),
     ("gopher://example.com/", "never gopher:"), ("http:///x.png", "no host"),
     ("http://example.com:99999/", "not valid")],
)
def test_only_http_and_https_urls_are_fetched(url, needle):
    refused(lambda: parse_target(url, PARAM), needle)


def test_paths_are_kept_and_quoted():
    target = parse_target("https://Example.COM/a b/ü.png?raw=true#frag", PARAM)
    assert (target.scheme, target.host, target.port) == ("https", "example.com", 443)
    assert target.path == "/a%20b/%C3%BC.png?raw=true"


class FakeResponse:
    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.status, self._body, self._headers = status, body, headers or {}

    def getheader(self, name: str, default=None):
        return self._headers.get(name, default)

    def read1(self, size: int) -> bytes:
        chunk, self._body = self._body[:size], self._body[size:]
        return chunk


class FakeOpener:
    """Answers each request from `answers` (url -> response) and records what was connected to."""

    def __init__(self, answers: dict[str, FakeResponse]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, target, addresses, timeout):
        url = f"{target.scheme}://{target.host}{target.path}"
        self.calls.append((url, list(addresses)))
        response = self.answers[url]

        class Conn:
            def getresponse(self):
                return response

            def close(self):
                pass

        return Conn()


def redirect(location: str) -> FakeResponse:
    return FakeResponse(302, headers={"Location": location})


@pytest.mark.parametrize(
    "location,needle",
    [("http://10.0.0.1/cat.png", "private"), ("http://evil.test/cat.png", "loopback"),
     ("http://[::ffff:169.254.169.254]/", "link-local"), ("file:///etc/passwd", "never file:"),
     ("ftp://public.test/cat.png", "never ftp:")],
)
def test_every_redirect_hop_is_checked(location, needle):
    opener = FakeOpener({"http://public.test/a": redirect(location)})
    rules = policy({"public.test": [PUBLIC], "evil.test": ["127.0.0.1"]})
    refused(lambda: fetch_image("http://public.test/a", PARAM, rules, max_bytes=CAP, opener=opener), needle)
    assert [url for url, _ in opener.calls] == ["http://public.test/a"]  # the refused hop was never connected to


def test_the_checked_address_is_the_one_connected_to():
    # A rebinding resolver: public when checked, loopback on any later lookup. There is no later lookup.
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    lookups = []

    def resolve(host):
        lookups.append(host)
        return next(answers)

    opener = FakeOpener({"http://rebind.test/cat.png": FakeResponse(200, GRADIENT)})
    rules = MediaPolicy(allow_remote=True, resolve=resolve)
    assert fetch_image("http://rebind.test/cat.png", PARAM, rules, max_bytes=CAP, opener=opener) == GRADIENT
    assert lookups == ["rebind.test"] and opener.calls == [("http://rebind.test/cat.png", [PUBLIC])]


def test_redirects_are_followed_and_relative_ones_resolved():
    opener = FakeOpener({
        "http://public.test/a": redirect("/b"),
        "http://public.test/b": redirect("https://cdn.test/c.png"),
        "https://cdn.test/c.png": FakeResponse(200, CHECKS),
    })
    rules = policy({"public.test": [PUBLIC], "cdn.test": ["8.8.8.8"]})
    assert fetch_image("http://public.test/a", PARAM, rules, max_bytes=CAP, opener=opener) == CHECKS
    assert [addresses for _, addresses in opener.calls] == [[PUBLIC], [PUBLIC], ["8.8.8.8"]]


def test_more_than_five_redirects_are_refused():
    opener = FakeOpener({f"http://public.test/{i}": redirect(f"/{i + 1}") for i in range(10)})
    rules = policy({"public.test": [PUBLIC]})
    refused(lambda: fetch_image("http://public.test/0", PARAM, rules, max_bytes=CAP, opener=opener), "more than 5")
    assert len(opener.calls) == 6


@pytest.mark.parametrize(
    "data,ok",
    [(GRADIENT, True), (b"\xff\xd8\xff\xe0" + bytes(20), True), (b"GIF89a" + bytes(10), True),
     (b"RIFF\0\0\0\0WEBPVP8 ", True), (b"BM" + bytes(12) + (40).to_bytes(4, "little") + bytes(8), True),
     (b"BMW is a car, not a bitmap header", False), (b"<html>", False), (b"", False)],
)
def test_bodies_must_look_like_images(data, ok):
    assert looks_like_image(data) is ok


# Real fetches from a loopback server (so private addresses must be allowed).
LOCAL = MediaPolicy(allow_remote=True, allow_private=True, connect_timeout=2.0, read_timeout=2.0)


@pytest.fixture(scope="module")
def server():
    with image_server() as running:
        yield running


def test_a_png_is_fetched_byte_for_byte(server):
    assert fetch_image(server.url("/cat.png"), PARAM, LOCAL, max_bytes=CAP) == GRADIENT
    assert server.hosts[-1] == f"127.0.0.1:{server.port}"


def test_a_pinned_name_keeps_its_host_header(server):
    rules = MediaPolicy(allow_remote=True, allow_private=True, resolve=lambda host: ["127.0.0.1"])
    assert fetch_image(server.url("/cat.png", host="images.test"), PARAM, rules, max_bytes=CAP) == GRADIENT
    assert server.hosts[-1] == f"images.test:{server.port}"


def test_a_redirect_chain_is_followed(server):
    assert fetch_image(server.url("/hop/3"), PARAM, LOCAL, max_bytes=CAP) == GRADIENT
    assert server.paths[-5:] == ["/hop/3", "/hop/2", "/hop/1", "/hop/0", "/cat.png"]


def test_a_404_is_a_400_naming_the_status(server):
    refused(lambda: fetch_image(server.url("/missing"), PARAM, LOCAL, max_bytes=CAP), "HTTP 404")


def test_a_page_that_is_not_an_image_is_a_400(server):
    refused(lambda: fetch_image(server.url("/page"), PARAM, LOCAL, max_bytes=CAP), "did not return an image")


def test_a_body_over_the_cap_is_cut_off(server):
    refused(lambda: fetch_image(server.url("/big"), PARAM, LOCAL, max_bytes=len(GRADIENT) + 100), "larger than")
    refused(lambda: fetch_image(server.url("/big-declared"), PARAM, LOCAL, max_bytes=CAP), "larger than 20 MB")


@pytest.mark.parametrize("path", ["/slow", "/drip"])
def test_a_slow_server_times_out(server, path):
    rules = MediaPolicy(allow_remote=True, allow_private=True, connect_timeout=1.0, read_timeout=0.3)
    refused(lambda: fetch_image(server.url(path), PARAM, rules, max_bytes=CAP), "timed out")


def test_a_closed_port_is_a_400(server):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused(lambda: fetch_image(f"http://127.0.0.1:{port}/x.png", PARAM, LOCAL, max_bytes=CAP), "could not be fetched")


def test_without_allow_private_the_loopback_server_is_refused(server):
    rules = MediaPolicy(allow_remote=True)
    for host in ("127.0.0.1", "localhost"):
        refused(lambda: fetch_image(server.url("/cat.png", host=host), PARAM, rules, max_bytes=CAP),
                "--remote-media-allow-private")


def test_a_redirect_from_an_allowed_server_to_a_private_address_is_refused(server, monkeypatch):
    # The first hop is allowed (a resolver says public.test is public, though it is this server),
    # the redirect it answers points at a private address: refused before any connection.
    rules = MediaPolicy(allow_remote=True, resolve=lambda host: [PUBLIC])
    from homeport.services.text.prompts import remote_media

    real = remote_media._open
    monkeypatch.setattr(remote_media, "_open", lambda target, addresses, timeout: real(target, ["127.0.0.1"], timeout))
    url = f"http://public.test:{server.port}/to?url=http://10.0.0.1/cat.png"
    refused(lambda: fetch_image(url, PARAM, rules, max_bytes=CAP), "private", "--remote-media-allow-private")


def test_offline_by_default_and_every_url_named(server):
    ref = images.ImageRef(server.url("/cat.png"), PARAM)
    refused(lambda: images.decode_image_url(ref), "offline", "--allow-remote-media")
    assert images.decode_image_url(ref, LOCAL) == GRADIENT


def test_several_images_are_fetched_in_order_each_url_once(server):
    refs = [images.ImageRef(server.url(p), f"messages[0].content[{i}].image_url")
            for i, p in enumerate(["/checks.png", "/cat.png", "/checks.png"])]
    before = len(server.paths)
    assert images.load_images(refs, LOCAL) == [CHECKS, GRADIENT, CHECKS]
    assert sorted(server.paths[before:]) == ["/cat.png", "/checks.png"]
