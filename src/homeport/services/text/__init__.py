"""Text generation: chat and completions, from prompt building (`prompts/`) through sampling
parameters and the generation loop to stop strings, reasoning, tool calls (`tool_calls/`),
logprobs and the response; the internal token/logits endpoints of a text model."""
