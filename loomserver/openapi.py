"""The OpenAPI description, built from the same route table the server registers."""
from __future__ import annotations

import re

ERROR = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "type": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "string"},
    "extra_info": {"type": "object"}}}, "node_errors": {"type": "object"}}}
PROMPT_BODY = {"type": "object", "required": ["prompt"], "properties": {
    "prompt": {"type": "object", "description": "API format {id: {class_type, inputs}} or the editor's saved workflow"},
    "client_id": {"type": "string", "description": "the WebSocket clientId that receives this prompt's events"},
    "extra_data": {"type": "object", "description": "e.g. {extra_pnginfo: {workflow}}, saved in the PNGs"},
    "front": {"type": "boolean", "description": "run before every pending prompt"},
    "prompt_id": {"type": "string", "description": "optional id chosen by the client"}}}
BODIES = {
    ("post", "/prompt"): PROMPT_BODY,
    ("post", "/queue"): {"type": "object", "properties": {"clear": {"type": "boolean"},
                                                          "delete": {"type": "array", "items": {"type": "string"}}}},
    ("post", "/history"): {"type": "object", "properties": {"clear": {"type": "boolean"},
                                                            "delete": {"type": "array", "items": {"type": "string"}}}},
    ("post", "/interrupt"): {"type": "object", "properties": {"prompt_id": {"type": "string"}}},
    ("post", "/free"): {"type": "object", "properties": {"unload_models": {"type": "boolean"},
                                                         "free_memory": {"type": "boolean"}}},
}
HEADERS = {("post", "/prompt"): [("Idempotency-Key", "a retry with the same key and body answers with the first "
                                                     "request's prompt; another body is 422 idempotency_key_reuse")]}
QUERY = {
    "/view": [("filename", True), ("subfolder", False), ("type", False)],
    "/history": [("max_items", False), ("offset", False)],
    "/queue": [("max_items", False), ("offset", False)],
    "/ws": [("clientId", False), ("token", False)],
    "/userdata": [("dir", True)],
    "/jobs": [("status", False), ("workflow_id", False), ("sort_by", False), ("sort_order", False),
              ("limit", False), ("offset", False)],
}


def describe(routes, prefix: str = "/api") -> dict:
    """`routes`: (method, path, handler, summary) tuples; each API path is also served under `prefix`."""
    paths: dict = {}
    for method, path, _handler, summary in routes:
        op = {"summary": summary, "responses": {"200": {"description": "OK"},
                                                "4XX": {"description": "a JSON error",
                                                        "content": {"application/json": {"schema": ERROR}}}}}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in re.findall(r"{(\w+)(?::[^}]*)?}", path)]
        params += [{"name": n, "in": "query", "required": r, "schema": {"type": "string"}}
                   for n, r in QUERY.get(path, []) if method == "get"]
        params += [{"name": n, "in": "header", "required": False, "description": d, "schema": {"type": "string"}}
                   for n, d in HEADERS.get((method, path), [])]
        if params:
            op["parameters"] = params
        body = BODIES.get((method, path))
        if body:
            op["requestBody"] = {"content": {"application/json": {"schema": body}}}
        if path == "/upload/image":
            op["requestBody"] = {"content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary"}, "overwrite": {"type": "string"},
                "type": {"type": "string", "enum": ["input", "temp"]}, "subfolder": {"type": "string"}}}}}}
        clean = re.sub(r"{(\w+):[^}]*}", r"{\1}", path)
        paths.setdefault(clean, {})[method] = op
        if clean != "/ws":
            paths.setdefault(prefix + clean, {})[method] = {**op, "summary": summary + " (same as " + clean + ")"}
    return {"openapi": "3.0.3",
            "info": {"title": "Loom", "version": "0.1.0",
                     "description": "ComfyUI-compatible workflow API. Errors are JSON: {error: {type, message}}."},
            "paths": paths}
