"""Idempotent submits, as ComfyUI's API v2 has them: POST /prompt with an `Idempotency-Key` header.

The same key with the same body (compared as canonical JSON) answers with the first request's prompt
and `Idempotency-Replayed: true`; the same key with another body is 422 `idempotency_key_reuse`. The
keys live in the queue database (loomqueue.store), written in the transaction that queues the
prompt, and are kept 24 hours.
"""
from __future__ import annotations

import hashlib
import json
import re

from .security import Refused, reply

KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII: a UUID or any client token


def request_key(request, body: dict) -> tuple[str | None, str | None]:
    """The request's Idempotency-Key (None without the header) and the fingerprint of its body (key
    order and white space do not matter)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None, None
    if not KEY.match(key):
        raise Refused(400, "'Idempotency-Key' must be 1-255 visible ASCII characters (e.g. a UUID)", "bad_parameter")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return key, hashlib.sha256(canonical.encode()).hexdigest()


def replay(key: str, prompt_id: str, number: int | None):
    """The answer to a request whose key was used before: the first request's prompt, or 422 when
    the key came with another body (number None)."""
    if number is None:
        raise Refused(422, f"the Idempotency-Key {key!r} was used for another request (prompt {prompt_id}); "
                           "use a new key for a new prompt", "idempotency_key_reuse", prompt_id=prompt_id)
    return reply({"prompt_id": prompt_id, "number": number, "node_errors": {}}, headers={"Idempotency-Replayed": "true"})
