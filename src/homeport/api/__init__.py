"""HTTP: routes, auth, errors and SSE framing. Knows nothing about engines."""
