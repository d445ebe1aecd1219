"""Wire adapters: each maps one API's request onto the neutral conversation of the chat pipeline
(services/text/conversation.py) and the pipeline's neutral events (services/text/events.py) back
onto that API's bodies and stream events. The OpenAI chat adapter's request side is
openai_chat.py; its bodies and chunks are the chat service's own (chat.py, chat_output.py)."""
