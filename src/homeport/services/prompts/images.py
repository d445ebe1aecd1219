"""Images in chat messages: where each one sits in the rendered prompt, and its bytes.

Messages are rendered with a numbered slot in place of each image part, so that after templating
and truncation (which may drop old turns, and their images) the slots left in the prompt say
exactly which images it holds, in order. Each slot then becomes the engine's own marker. Images
come inline as `data:` URLs only: homeport never fetches anything.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeport.errors import InvalidRequestError

# Private-use characters: no template or tokenizer gives them meaning, no user types them by chance.
_SLOT = "\ue000image:{}\ue001"
_SLOT_PATTERN = re.compile("\ue000image:(\\d+)\ue001")
SHOWN_MARKER = "<__media__>"  # how a slot shows in /v1/internal/chat-prompt (llama.cpp's marker)
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # as OpenAI's limit per image
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


def image_refs(messages: Iterable[Any]) -> list[ImageRef]:
    """Every image part of the messages, in order (the order `slot` numbers them)."""
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


def place_images(prompt: str, refs: Sequence[ImageRef], marker: str) -> tuple[str, list[bytes]]:
    """The prompt with each slot replaced by `marker`, and the images those slots stand for, in
    prompt order (decoded here: only the images the prompt kept). Raises InvalidRequestError."""
    images: list[bytes] = []

    def replace(match: re.Match) -> str:
        index = int(match.group(1))
        if index >= len(refs):  # slot text typed by the user, not an image part
            raise InvalidRequestError("the messages contain reserved characters (U+E000, U+E001)", param="messages")
        images.append(decode_image_url(refs[index]))
        return marker

    return _SLOT_PATTERN.sub(replace, prompt), images


def decode_image_url(ref: ImageRef) -> bytes:
    url = ref.url.strip()
    if not url:
        raise InvalidRequestError("an image_url part needs a url", param=ref.param)
    match = _DATA_URL.match(url)
    if match is None:
        if re.match(r"^[a-z][a-z0-9+.-]*:", url, re.IGNORECASE) and not url.lower().startswith("data:"):
            raise InvalidRequestError(
                "homeport runs offline and never fetches images: send the image inline as a "
                "data:image/...;base64,... URL", param=ref.param,
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
