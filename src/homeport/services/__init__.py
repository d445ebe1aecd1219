"""Between the wire and the engines: prompts, sampling parameters, generation, responses, usage."""
