"""homeport: an offline OpenAI-compatible server."""

__version__ = "0.1.0"
