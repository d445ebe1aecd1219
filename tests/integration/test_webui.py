"""The chat page in a real headless Chromium (Debian's, driven by Playwright) against a real
`homeport serve` on the default model: key prompt, streaming, stop, edit/regenerate, model switch,
reload, escaping of a hostile reply, and not one request to any host but this one."""

from __future__ import annotations

import io
import json
import os
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from support.server import API_KEY, GEMMA_MODEL_ID, SMOLLM2_MODEL_ID, RunningServer, start_server, stop_server

CHROMIUM = Path(os.environ.get("HOMEPORT_CHROMIUM", "/usr/bin/chromium"))
# Set to docs/screenshots to refresh the committed screenshots; by default they go to a temp dir.
SCREENSHOT_DIR = os.environ.get("HOMEPORT_SCREENSHOT_DIR")
FIRST_QUESTION = "Write one sentence about the sea."
HOSTILE = "<script>window.__pwned=1</script>"
expect.set_options(timeout=60_000)  # a model load (the switch to Gemma) takes seconds on 2 cores


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("webui"), "--api-key", API_KEY, model=None)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def browser_requests() -> list[str]:
    return []


@pytest.fixture(scope="module")
def page(server, browser_requests) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install-test` installs Debian's chromium")
    with sync_playwright() as playwright:
        # A fake microphone (a tone) stands in for a real one.
        args = ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, permissions=["microphone"])
        context.on("request", lambda request: browser_requests.append(request.url))
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server.base_url)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def show_settings(page: Page, visible: bool) -> None:
    if page.locator("#settings").is_visible() != visible:
        page.click("#toggle-settings")


def set_field(page: Page, field: str, value: str) -> None:
    show_settings(page, True)
    page.fill(f"#{field}", value)
    page.dispatch_event(f"#{field}", "change")


def watch_streaming(page: Page) -> None:
    """Records in the page whether a reply was seen with text while still streaming."""
    page.evaluate("""() => {
        window.__sawPartial = false;
        new MutationObserver(() => {
            const body = document.querySelector('.msg.streaming .body');
            if (body && body.textContent.trim()) window.__sawPartial = true;
        }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
    }""")


def send(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_done(page: Page) -> None:
    expect(page.locator(".msg.streaming")).to_have_count(0)
    expect(page.locator("#stop")).to_be_hidden()


def test_the_page_asks_for_the_key_then_lists_the_models(page):
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key-input", API_KEY)
    page.press("#key-input", "Enter")
    expect(page.locator("#model option")).to_have_count(2)
    assert set(page.locator("#model option").all_inner_texts()) == {SMOLLM2_MODEL_ID, GEMMA_MODEL_ID}
    assert page.evaluate("localStorage.getItem('homeport.apiKey')") == API_KEY


def test_a_reply_streams_in_with_usage(page, screenshots):
    page.select_option("#model", SMOLLM2_MODEL_ID)
    set_field(page, "temperature", "0")
    set_field(page, "max_tokens", "40")
    watch_streaming(page)
    send(page, FIRST_QUESTION)
    wait_done(page)
    reply = page.locator(".msg.assistant").last
    assert reply.locator(".body").inner_text().strip()
    assert page.evaluate("window.__sawPartial")  # text appeared before the reply was complete
    meta = reply.locator(".meta").inner_text()
    assert "completion tokens" in meta and "tokens/s" in meta and SMOLLM2_MODEL_ID in meta
    show_settings(page, False)
    page.screenshot(path=screenshots / "chat.png")


def test_stop_mid_stream_cancels_the_generation(page, server):
    before = server.generation_stats()["cancelled"]
    set_field(page, "max_tokens", "2000")
    set_field(page, "temperature", "1")
    send(page, "Tell me a very long story about a dragon and a lighthouse.")
    expect(page.locator(".msg.streaming .body")).not_to_have_text("")
    page.click("#stop")
    wait_done(page)
    assert "stopped" in page.locator(".msg.assistant").last.locator(".meta").inner_text()
    deadline = time.monotonic() + 60
    while server.generation_stats()["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.generation_stats()["cancelled"] == before + 1


def test_edit_a_past_message_and_regenerate(page):
    set_field(page, "max_tokens", "8")
    count = page.locator(".msg").count()
    page.locator(".msg.user").last.locator("button.edit").click()
    page.locator(".msg.user textarea.edit").fill("Say hi.")
    page.locator(".msg.user button.save-edit").click()
    wait_done(page)
    expect(page.locator(".msg")).to_have_count(count)  # the edited turn replaced the old one
    expect(page.locator(".msg.user").last.locator(".body")).to_have_text("Say hi.")
    with page.expect_request("**/v1/chat/completions") as request:
        page.locator(".msg.assistant").last.locator("button.regenerate").click()
    wait_done(page)
    expect(page.locator(".msg")).to_have_count(count)
    assert json.loads(request.value.post_data)["messages"][-1] == {"role": "user", "content": "Say hi."}


def test_switching_the_model(page):
    page.select_option("#model", GEMMA_MODEL_ID)
    with page.expect_request("**/v1/chat/completions") as request:
        send(page, "Hello")
    wait_done(page)
    body = json.loads(request.value.post_data)
    assert body["model"] == GEMMA_MODEL_ID and body["max_tokens"] == 8 and body["stream_options"] == {"include_usage": True}
    assert GEMMA_MODEL_ID in page.locator(".msg.assistant").last.locator(".meta").inner_text()
    assert not page.locator(".msg.assistant .error-text").count()


def test_reload_finds_the_conversation(page):
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(page.locator("#key-dialog")).to_be_hidden()  # the key was kept
    expect(page.locator("#model")).to_have_value(GEMMA_MODEL_ID)
    item = page.locator("#conversations li", has_text=FIRST_QUESTION[:20])
    expect(item).to_have_count(1)
    item.locator(".title").click()
    expect(page.locator(".msg.user .body").first).to_have_text(FIRST_QUESTION)
    expect(page.locator(".msg.user .body").last).to_have_text("Hello")


def canned_stream(model: str) -> str:
    chunks = [
        {"reasoning_content": "The user wants code. "},
        {"content": f"Here is a page: {HOSTILE} and <img src=x onerror=\"window.__pwned=2\">\n\n"},
        {"content": "- **bold** item\n- `inline <b>`\n\n```html\n" + HOSTILE + "\n```\n"},
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Oslo\"}"}}]},
    ]
    events = [{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in chunks]
    events.append({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 30, "total_tokens": 35}})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def test_a_reply_with_script_stays_text(page, screenshots):
    # The reply is canned (the small models will not reliably echo markup): the page's handling of
    # a hostile reply is what is under test, as is the rendering of reasoning and tool calls.
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=canned_stream(GEMMA_MODEL_ID)))
    try:
        page.click("#new-chat")
        send(page, "Show me some HTML")
        wait_done(page)
    finally:
        page.unroute("**/v1/chat/completions")
    reply = page.locator(".msg.assistant").last
    assert HOSTILE in reply.locator(".body p").first.inner_text()
    expect(reply.locator(".body pre code")).to_have_text(HOSTILE)
    expect(reply.locator(".body strong")).to_have_text("bold")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#messages script, #messages img[onerror], #messages [onerror]").count() == 0
    expect(reply.locator("details.reasoning summary")).to_have_text("Reasoning")
    expect(reply.locator(".tool-call")).to_contain_text('get_weather{"city": "Oslo"}')
    reply.locator("details.reasoning summary").click()
    show_settings(page, False)
    page.screenshot(path=screenshots / "markdown-and-tools.png")
    show_settings(page, True)
    page.screenshot(path=screenshots / "settings.png")


def test_conversations_are_renamed_exported_and_deleted(page):
    page.once("dialog", lambda dialog: dialog.accept("Renamed chat"))
    page.locator("#conversations li", has_text="Show me some HTML").locator("button.rename").click()
    expect(page.locator("#conversations li", has_text="Renamed chat")).to_have_count(1)
    with page.expect_download() as download:
        page.click("#export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert {c["title"] for c in exported} >= {"Renamed chat"} and len(exported) == 2
    assert any(m["content"] == FIRST_QUESTION for c in exported for m in c["messages"])
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#conversations li", has_text="Renamed chat").locator("button.delete").click()
    expect(page.locator("#conversations li")).to_have_count(1)


TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def tiny_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 800)
    return buffer.getvalue()


def shown(page: Page, control: str) -> bool:
    """Whether the control is offered (the settings panel itself may be folded)."""
    return page.evaluate("(sel) => !document.querySelector(sel).closest('[hidden]:not(#settings)')", control)


def test_media_controls_follow_the_model_listing(page, server):
    with server.http() as http:
        served = {cap for model in http.get("/v1/models").json()["data"] for cap in model["capabilities"]}
    controls = {"#generate-image": "image_generation", "#record": "transcription", "#voice": "speech_synthesis"}
    assert {control: shown(page, control) for control in controls} == {c: cap in served for c, cap in controls.items()}
    # A listing with every kind (canned: those backends are not what this test is about).
    listing = {"object": "list", "data": [
        {"id": GEMMA_MODEL_ID, "object": "model", "capabilities": ["text_generation"]},
        {"id": "painter", "object": "model", "capabilities": ["image_generation"]},
        {"id": "voice", "object": "model", "capabilities": ["speech_synthesis"]},
        {"id": "ears", "object": "model", "capabilities": ["transcription"]},
    ]}
    page.route("**/v1/models", lambda route: route.fulfill(json=listing))
    page.route("**/v1/images/generations", lambda route: route.fulfill(json={"created": 0, "data": [{"b64_json": TINY_PNG}]}))
    page.route("**/v1/audio/speech", lambda route: route.fulfill(body=tiny_wav(), content_type="audio/wav"))
    page.route("**/v1/audio/transcriptions", lambda route: route.fulfill(json={"text": "heard this"}))
    try:
        page.reload()
        expect(page.locator("body[data-ready=true]")).to_have_count(1)
        expect(page.locator("#model")).to_have_value(GEMMA_MODEL_ID)
        assert all(shown(page, control) for control in controls)
        assert not shown(page, "#attach-label")  # this listing's text model has no vision
        page.fill("#input", "a lighthouse at dusk")
        with page.expect_request("**/v1/images/generations") as request:
            page.click("#generate-image")
        expect(page.locator(".msg.assistant .images img")).to_have_attribute("src", f"data:image/png;base64,{TINY_PNG}")
        body = json.loads(request.value.post_data)
        assert body == {"model": "painter", "prompt": "a lighthouse at dusk", "n": 1, "response_format": "b64_json"}
        page.locator("#conversations li", has_text=FIRST_QUESTION[:20]).locator(".title").click()
        reply = page.locator(".msg.assistant").first
        with page.expect_request("**/v1/audio/speech") as request:
            reply.locator("button.play").click()
        body = json.loads(request.value.post_data)
        assert body["model"] == "voice" and body["input"] == reply.locator(".body").inner_text().strip()
        page.click("#record")
        expect(page.locator("#record")).to_have_text("Stop recording")
        with page.expect_request("**/v1/audio/transcriptions") as request:
            page.click("#record")
        expect(page.locator("#input")).to_have_value("heard this")
        form = request.value.post_data_buffer
        assert b'name="model"\r\n\r\nears' in form and b'filename="recording.webm"' in form
    finally:
        for path in ("models", "images/generations", "audio/speech", "audio/transcriptions"):
            page.unroute(f"**/v1/{path}")


def test_no_request_leaves_the_machine(page, browser_requests):
    assert browser_requests, "no request was recorded"
    foreign = [url for url in browser_requests
               if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname not in ("127.0.0.1", "localhost")]
    assert not foreign, foreign
