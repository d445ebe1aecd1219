"""How the ingress ends a stream it relays when the stream is cut (its replica lost, the shutdown
deadline): with the error frame of the stream's own wire format, as a single server would end it
(api/streaming.py): OpenAI's error chunk and `[DONE]`, Anthropic's `error` event, or the Responses
`error` event next in the stream's sequence."""

from __future__ import annotations

import re

from homeport.api.event_stream import named_frame
from homeport.api.streaming import DONE, OPENAI_SSE
from homeport.errors import HomeportError

_SEQUENCE = re.compile(rb'"sequence_number":\s*(\d+)')


class StreamEnd:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sequenced = path.startswith("/v1/responses")
        self.last = -1  # the last sequence number relayed (Responses)

    def saw(self, chunk: bytes) -> None:
        if self.sequenced and (numbers := _SEQUENCE.findall(chunk)):
            self.last = int(numbers[-1])

    def frame(self, error: HomeportError) -> bytes:
        if self.path.startswith("/v1/messages"):
            from homeport.services.wire.anthropic import error_envelope

            return named_frame("error", error_envelope(error)[1])
        if self.sequenced:
            from homeport.api.routes.responses import error_event

            return named_frame(*error_event(error, self.last + 1))
        return OPENAI_SSE.error(error) + DONE
