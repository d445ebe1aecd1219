"""Wire adapters: each maps one API's request onto the neutral chat pipeline (services/text) and
the pipeline's neutral events (services/text/events.py) back onto that API's bodies and stream
events. The OpenAI chat adapter lives with the pipeline (chat.py, chat_output.py)."""
