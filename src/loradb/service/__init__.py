"""The database over HTTP: the FastAPI app, its wire format and limits, `loradb serve`, and
RemoteDB, the client that speaks to it."""
