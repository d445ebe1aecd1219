"""The chat page's Markdown renderer (run in Node): escapes first, then renders a safe subset."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from homeport.webui import STATIC_DIR

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    '[x](https://ok.example/"onmouseover="alert(1))',
    "![pic](http://tracker.example/pixel.png)",
    "```html\n<script>alert(1)</script>\n```",
    "`<b>` and **<i>bold</i>** and _<u>it</u>_",
    "> <iframe src=//evil></iframe>",
    "```\" onmouseover=alert(1)\ncode\n```",
]
ALLOWED_TAGS = {"p", "br", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code",
                "strong", "em", "del", "a", "hr"}


def render(*sources: str) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing (make install-test needs it too)")
    script = (
        f"import {{ renderMarkdown }} from {json.dumps((STATIC_DIR / 'markdown.js').as_uri())};"
        f"console.log(JSON.stringify({json.dumps(list(sources))}.map(renderMarkdown)));"
    )
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


class Elements(HTMLParser):
    """Every element the browser would build from the HTML, with its attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def test_no_markup_from_the_source_survives():
    for source, html in zip(HOSTILE, render(*HOSTILE)):
        for tag, attrs in Elements(html).found:
            assert tag in ALLOWED_TAGS, (source, html)
            assert set(attrs) <= {"href", "target", "rel", "class"}, (source, html)
            assert re.match(r"^(https?://|/[^/]|#)", attrs.get("href", "/x")), (source, html)


def test_the_safe_subset_renders():
    heading, listing, code, link, unclosed = render(
        "# Title", "- one\n- **two**", "```py\nprint('<x>')\n```", "[docs](/docs)", "```\nstill streaming"
    )
    assert heading == "<h1>Title</h1>"
    assert listing == "<ul><li>one</li><li><strong>two</strong></li></ul>"
    assert code == '<pre><code class="language-py">print(&#39;&lt;x&gt;&#39;)</code></pre>'
    assert link == '<p><a href="/docs" target="_blank" rel="noopener noreferrer">docs</a></p>'
    assert unclosed == "<pre><code>still streaming</code></pre>"
