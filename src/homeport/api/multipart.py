"""Reading a multipart upload (audio files, images) with the parser's limits, every failure a 400
naming the upload's field; the caller closes the form."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import FormData

from homeport.errors import HomeportError, InvalidRequestError


async def read_form(request: Request, *, param: str, what: str, max_files: int) -> FormData:
    """`param`: the file field (`file`, `image`); `what`: how the error names its content."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError(f"the request must be multipart/form-data with the {what} in '{param}'", param=param)
    try:
        return await request.form(max_files=max_files, max_fields=64, max_part_size=64 * 1024)
    except HomeportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the multipart parser reports bad bodies in several ways
        raise InvalidRequestError(f"the multipart body could not be read ({type(exc).__name__})", param=param) from None
