"""The queue: the persistent store of prompts and history, the local worker loop, and the router
that hands pending prompts to idle Ray workers.

Torch-free and testable alone: it imports only the standard library and `graph` (formats and the
validation error), never `nodes`, `loomserver` or Ray. The server (loomserver) sits above it.
"""
