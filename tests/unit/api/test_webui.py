"""The chat page's serving: at / with its assets under /ui/, a strict CSP, off with --nowebui."""

from __future__ import annotations

import re

from homeport.webui import STATIC_DIR


async def test_the_page_and_its_assets_are_served_without_the_key(make_client):
    client = make_client(api_key="secret")
    page = await client.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    for asset in re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text):
        response = await client.http.get(asset)
        assert response.status_code == 200, asset
        assert "content-security-policy" in response.headers
    assert (await client.http.get("/v1/models")).status_code == 401  # the API still needs the key


async def test_nowebui_leaves_the_page_out(make_client):
    client = make_client(nowebui=True)
    assert (await client.http.get("/")).status_code == 404
    assert (await client.http.get("/ui/app.js")).status_code == 404
    assert (await client.http.get("/v1/models")).status_code == 200


def test_the_page_names_no_other_host():
    # Offline is the promise: no CDN, no web font, no absolute URL to anywhere.
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text), path.name
        assert "@import" not in text and "url(http" not in text, path.name
        assert not re.search(r"fetch\(\s*[\"'`]https?:", text), path.name
