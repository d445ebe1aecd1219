"""Responses `input_file` parts: a text-like file sent inline (`file_data`, a data URL or plain
base64) becomes its text in the message, under its filename. What homeport cannot read is a 400
that says so: PDFs and other binary files (no document parsing here), and `file_id` / `file_url`
(there is no Files API, and nothing is fetched from the network)."""

from __future__ import annotations

import base64
import binascii
import urllib.parse

from homeport.errors import InvalidRequestError

# Media types that are binary whatever their bytes look like; anything else is read as text when
# its bytes are UTF-8 without control characters (clients often label code as octet-stream).
_BINARY_PREFIXES = (
    "image/",
    "audio/",
    "video/",
    "font/",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-tar",
    "application/vnd.",
    "application/msword",
)
_ALLOWED_CONTROLS = frozenset("\t\n\r\f")


def check_file_part(part: dict, where: str) -> dict:
    """The part as stored (type, filename, file_data), after checking homeport can read it."""
    for field, why in (
        ("file_id", "homeport has no Files API; send the file's content as file_data"),
        ("file_url", "homeport does not fetch remote files; send the file's content as file_data"),
    ):
        if part.get(field):
            raise InvalidRequestError(f"input_file {field} is not supported: {why}", param=f"{where}.{field}")
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        raise InvalidRequestError(
            "an input_file needs file_data: the file's content as a data URL or base64", param=f"{where}.file_data"
        )
    filename = part.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise InvalidRequestError("an input_file's filename must be a string", param=f"{where}.filename")
    file_text(data, filename or "", f"{where}.file_data")
    return {"type": "input_file", "filename": filename or "file", "file_data": data}


def file_prompt(part: dict) -> str:
    """The text the model reads for a (checked) input_file part."""
    text = file_text(part["file_data"], part["filename"], "file_data")
    return f'<file name="{part["filename"]}">\n{text.rstrip()}\n</file>'


def file_text(data: str, filename: str, param: str) -> str:
    media_type, payload = _decode(data, param)
    if media_type == "application/pdf" or payload.startswith(b"%PDF") or filename.lower().endswith(".pdf"):
        raise InvalidRequestError(
            "homeport cannot read PDF files; extract their text and send it as input_text (or a .txt file)",
            param=param,
        )
    binary = InvalidRequestError(
        f"homeport can only read text files; {filename or 'this file'!r} ({media_type or 'no media type'}) is binary",
        param=param,
    )
    if media_type.startswith(_BINARY_PREFIXES):
        raise binary
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise binary from None
    if any(ch < " " and ch not in _ALLOWED_CONTROLS for ch in text):
        raise binary
    return text


def _decode(data: str, param: str) -> tuple[str, bytes]:
    """(media type or "", bytes) of a data URL or of plain base64."""
    try:
        if data.startswith("data:"):
            header, comma, body = data[5:].partition(",")
            if not comma:
                raise ValueError
            media_type = header.split(";")[0].strip().lower()
            if ";base64" in header.lower():
                return media_type, base64.b64decode(body, validate=True)
            return media_type, urllib.parse.unquote_to_bytes(body)
        return "", base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidRequestError(
            "file_data must be a data URL (data:text/plain;base64,...) or base64", param=param
        ) from None
