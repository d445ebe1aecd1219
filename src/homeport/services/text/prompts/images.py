"""Images in chat messages: where each one sits in the rendered prompt, and its bytes.

Messages are rendered with a numbered slot in place of each image part, so that after templating
and truncation (which may drop old turns, and their images) the slots left in the prompt say
exactly which images it holds, in order. Each slot then becomes the engine's own marker. Images
come inline as `data:` URLs, or as http(s) URLs fetched only under `--allow-remote-media`
(`remote_media`); either way only the images the prompt kept are loaded.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from homeport.engines.base import PromptMedia, TextEngine
from homeport.errors import InvalidRequestError
from homeport.services.text.conversation import Image, Message, Part, ToolResult
from homeport.services.text.prompts.media_policy import OFFLINE, MediaPolicy
from homeport.services.text.prompts.remote_media import fetch_image

# Private-use characters: no template or tokenizer gives them meaning, no user types them by chance.
_SLOT = "\ue000image:{}\ue001"
_SLOT_PATTERN = re.compile("\ue000image:(\\d+)\ue001")
SHOWN_MARKER = "<__media__>"  # how a slot shows in /v1/internal/chat-prompt (llama.cpp's marker)
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # as OpenAI's limit per image
_MAX_FETCHES = 4  # remote images fetched at once for one request
_REMOTE = re.compile(r"^https?://", re.IGNORECASE)
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.IGNORECASE)


def slot(index: int) -> str:
    """The text standing for the request's `index`-th image (counted over all messages)."""
    return _SLOT.format(index)


def show_slots(text: str) -> str:
    return _SLOT_PATTERN.sub(SHOWN_MARKER, text)


def has_slots(text: str) -> bool:
    return _SLOT_PATTERN.search(text) is not None


@dataclass(frozen=True)
class ImageRef:
    url: str
    param: str  # where it was in the request, for errors: messages[i].content[j].image_url


def image_refs(messages: Sequence[Message]) -> list[ImageRef]:
    """Every image part of the conversation, in order (the order `slot` numbers them), each named
    as the OpenAI chat field it maps onto: messages[i].content[j].image_url."""
    refs = []
    for i, message in enumerate(messages):
        parts: Sequence[Part] = message.parts
        if len(parts) == 1 and isinstance(parts[0], ToolResult):
            parts = () if isinstance(parts[0].content, str) else parts[0].content
        for j, part in enumerate(parts):
            if isinstance(part, Image):
                refs.append(ImageRef(part.url, f"messages[{i}].content[{j}].image_url"))
    return refs


def _wire_image_refs(messages: Iterable[Any]) -> list[ImageRef]:
    """`image_refs` of `/v1/completions`' `messages` (wire chat messages, read as they are)."""
    refs = []
    for i, message in enumerate(messages):
        content = message.content
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if getattr(part, "type", None) == "image_url":
                url = part.image_url.get("url") if isinstance(part.image_url, dict) else None
                refs.append(ImageRef(url if isinstance(url, str) else "", f"messages[{i}].content[{j}].image_url"))
    return refs


def place_images(
    prompt: str, refs: Sequence[ImageRef], marker: str, policy: MediaPolicy = OFFLINE
) -> tuple[str, list[bytes]]:
    """The prompt with each slot replaced by `marker`, and the images those slots stand for, in
    prompt order (loaded here: only the images the prompt kept). Blocking (remote images are
    fetched): call it off the event loop. Raises InvalidRequestError."""
    kept: list[ImageRef] = []

    def replace(match: re.Match) -> str:
        index = int(match.group(1))
        if index >= len(refs):  # slot text typed by the user, not an image part
            raise InvalidRequestError("the messages contain reserved characters (U+E000, U+E001)", param="messages")
        kept.append(refs[index])
        return marker

    text = _SLOT_PATTERN.sub(replace, prompt)
    return text, load_images(kept, policy)


def load_images(refs: Sequence[ImageRef], policy: MediaPolicy = OFFLINE) -> list[bytes]:
    """Each image's bytes, in order. Several remote ones are fetched concurrently, each URL once."""
    remote = list(dict.fromkeys(ref.url.strip() for ref in refs if _is_remote(ref.url) and policy.allow_remote))
    if len(remote) < 2:
        return [decode_image_url(ref, policy) for ref in refs]
    first = {}
    for ref in refs:
        first.setdefault(ref.url.strip(), ref)
    with ThreadPoolExecutor(max_workers=min(_MAX_FETCHES, len(remote)), thread_name_prefix="homeport-fetch") as pool:
        fetches: dict[str, Future[bytes]] = {url: pool.submit(decode_image_url, first[url], policy) for url in remote}
        try:
            return [fetches[ref.url.strip()].result() if ref.url.strip() in fetches else decode_image_url(ref, policy)
                    for ref in refs]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # the request fails: start no more fetches
            raise


def vision_marker(engine: TextEngine, refs: Sequence[ImageRef]) -> str:
    """The engine's image marker; a model that takes no images is a 400 naming the first image part."""
    marker = engine.media_marker()
    if marker is None:
        raise InvalidRequestError(
            f"the model {engine.info.model_id} does not accept images (load it with an mmproj "
            "vision projector); send text content only", param=refs[0].param if refs else "messages",
        )
    return marker


def tokenize_with_images(
    engine: TextEngine, prompt: str, refs: Sequence[ImageRef], policy: MediaPolicy, *, add_special: bool
) -> PromptMedia:
    """A prompt holding slots, tokenized with its kept images. Blocking: run it in a thread."""
    text, data = place_images(prompt, refs, vision_marker(engine, refs), policy)
    return engine.tokenize_media(text, data, add_special=add_special)


def completion_prompt(messages: Iterable[Any]) -> tuple[str, list[ImageRef]]:
    """`/v1/completions` with `messages` (the reference API's form): the text parts joined as they
    are, in order (no template, no separator, as the reference does), each SHOWN_MARKER standing
    for the next image part. Returned with a slot in place of each marker, and the image parts."""
    messages = list(messages)
    texts = []
    for message in messages:
        content = message.content
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part.text for part in content if getattr(part, "type", None) == "text")
    text = "".join(texts)
    if has_slots(text):
        raise InvalidRequestError("the messages contain reserved characters (U+E000, U+E001)", param="messages")
    refs = _wire_image_refs(messages)
    pieces = text.split(SHOWN_MARKER)
    if len(pieces) - 1 != len(refs):
        raise InvalidRequestError(
            f"the text has {len(pieces) - 1} {SHOWN_MARKER} marker(s) but the messages hold {len(refs)} image(s): "
            f"write one {SHOWN_MARKER} where each image goes, in order", param="messages",
        )
    return pieces[0] + "".join(slot(i) + piece for i, piece in enumerate(pieces[1:])), refs


def _is_remote(url: str) -> bool:
    return _REMOTE.match(url.strip()) is not None


def decode_image_url(ref: ImageRef, policy: MediaPolicy = OFFLINE) -> bytes:
    """A data: URL decoded, or an http(s) URL fetched when the policy allows. Blocking."""
    url = ref.url.strip()
    if not url:
        raise InvalidRequestError("an image_url part needs a url", param=ref.param)
    if _is_remote(url):
        if not policy.allow_remote:
            raise InvalidRequestError(
                "homeport runs offline and never fetches images unless started with --allow-remote-media: "
                "send the image inline as a data:image/...;base64,... URL, or restart homeport with that flag",
                param=ref.param,
            )
        return fetch_image(url, ref.param, policy, max_bytes=MAX_IMAGE_BYTES)
    match = _DATA_URL.match(url)
    if match is None:
        scheme = re.match(r"^([a-z][a-z0-9+.-]*):", url, re.IGNORECASE)
        if scheme and scheme.group(1).lower() != "data":
            raise InvalidRequestError(
                f"homeport never fetches {scheme.group(1).lower()}: URLs: send the image inline as a "
                "data:image/...;base64,... URL (or an http(s) URL, with --allow-remote-media)", param=ref.param,
            )
        raise InvalidRequestError("the image must be a base64 data URL (data:image/png;base64,...)", param=ref.param)
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith("image/"):
        raise InvalidRequestError(f"expected an image, got {mime}", param=ref.param)
    payload = url[match.end():]
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidRequestError(f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB", param=ref.param)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("the image's base64 data is not valid", param=ref.param) from None
    if not data:
        raise InvalidRequestError("the image is empty", param=ref.param)
    return data
