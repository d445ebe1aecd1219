"""One module per resource; each route is a few lines: parse, call one service, respond."""
