"""One exception hierarchy for every layer; the HTTP layer maps it to OpenAI's error envelope.

Engines and services raise these (never FastAPI exceptions), so the same failure reads the same
whether it happens before a response starts (a 4xx/5xx body) or inside a stream (an error frame).
"""

from __future__ import annotations


class HomeportError(Exception):
    """An error with everything the OpenAI envelope needs: status, type, code and param."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}

    def to_dict(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(HomeportError):
    """The request cannot be served as sent (400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"


class UnsupportedParameterError(InvalidRequestError):
    """A known field whose value homeport cannot honour: refused rather than silently ignored."""

    code = "unsupported_parameter"


class EngineInputError(InvalidRequestError):
    """An engine cannot use the input it was given (an image it cannot decode, an adapter file it
    refuses): a 400. Engines do not know the wire format, so it names no request field; the service
    that called the engine turns it into the client's error with the field (`for_param`)."""

    def for_param(self, param: str) -> InvalidRequestError:
        """The same error (message, code, status, headers) as the client sees it: naming `param`."""
        return InvalidRequestError(
            self.message, param=param, code=self.code, status_code=self.status_code, headers=self.headers
        )


class UnsupportedInputError(EngineInputError, UnsupportedParameterError):
    """An engine cannot honour this kind of input at all (images on a text-only model)."""


class AuthenticationError(HomeportError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class NotFoundError(HomeportError):
    status_code = 404
    error_type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class ServiceUnavailableError(HomeportError):
    status_code = 503
    error_type = "server_error"
    code = "service_unavailable"


class EngineError(HomeportError):
    """Inference failed inside an engine; the message is safe to show (no prompt text, no internals)."""

    status_code = 500
    error_type = "server_error"
    code = "engine_error"


class ChatTemplateError(InvalidRequestError):
    """A chat template could not be rendered for these messages (e.g. it called raise_exception)."""

    code = "chat_template_error"


class StartupError(Exception):
    """The server cannot start as configured (bad flag value, missing model, unreadable certificate).

    The CLI prints the message as one line on stderr and exits non-zero, without a traceback.
    """
