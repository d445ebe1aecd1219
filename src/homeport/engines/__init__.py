"""Inference engines: tokens in, tokens out. Nothing here imports FastAPI or the wire schemas."""
