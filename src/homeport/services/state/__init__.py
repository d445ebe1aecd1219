"""State that outlives a request: stored Responses (SQLite)."""
