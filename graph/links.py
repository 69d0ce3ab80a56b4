"""What a link is in an API prompt; a leaf module, so every other module of graph/ can import it."""
from __future__ import annotations

from typing import Any


def is_link(value: Any) -> bool:
    """API-format links are `[src_id, slot]` with a string id and an integer slot."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))
