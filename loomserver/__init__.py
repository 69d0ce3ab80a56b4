"""Loom's HTTP side: routes, WebSocket, files and security. Engine logic stays in `graph/`.

A package of its own (not `web`, which holds the editor) keeps `server.py` a thin command line and
keeps each HTTP concern in a small module: `app` (routes), `ws`, `files`, `security`, `openapi`.
"""
