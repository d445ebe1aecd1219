"""The wire format: pydantic models of OpenAI's requests plus the reference API's extra fields."""
