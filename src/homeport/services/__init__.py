"""Between the wire and the engines, one package per capability (`text/`, `embeddings/`), beside the
model manager, the LoRA service, the container that wires them and the small shared helpers
(`ids`, `reply`)."""
