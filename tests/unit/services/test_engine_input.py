"""Engines raise errors naming no request field; the service that called them names it."""

from __future__ import annotations

import pytest

from homeport.engines.fake import FakeEngine
from homeport.errors import (
    EngineInputError,
    InvalidRequestError,
    UnsupportedInputError,
    UnsupportedParameterError,
)
from homeport.services.engine_input import engine_input_from


def test_an_engine_input_error_names_no_field():
    engine = FakeEngine(vision=True)
    with pytest.raises(EngineInputError) as raised:
        engine.tokenize_media(f"a {engine.media_marker()}", [b"not a png"])
    assert raised.value.param is None and raised.value.status_code == 400


def test_the_service_names_the_field_and_keeps_message_code_status_and_headers():
    with pytest.raises(InvalidRequestError) as raised:
        with engine_input_from("lora_names"):
            raise EngineInputError("cannot load", code="lora_load_failed", headers={"X-A": "1"})
    error = raised.value
    assert not isinstance(error, EngineInputError)  # an outer block does not rename it again
    assert (error.param, error.message, error.code, error.status_code, error.headers) == (
        "lora_names", "cannot load", "lora_load_failed", 400, {"X-A": "1"})
    assert error.to_dict()["error"]["type"] == "invalid_request_error"


def test_an_unsupported_input_keeps_its_code():
    assert issubclass(UnsupportedInputError, UnsupportedParameterError)
    with pytest.raises(InvalidRequestError) as raised:
        with engine_input_from("messages"):
            raise UnsupportedInputError("the model takes no images")
    assert raised.value.code == "unsupported_parameter" and raised.value.param == "messages"


def test_other_errors_pass_unchanged():
    original = InvalidRequestError("bad image", param="messages[0].content[1].image_url")
    with pytest.raises(InvalidRequestError) as raised:
        with engine_input_from("messages"):
            raise original
    assert raised.value is original
