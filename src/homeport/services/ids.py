"""Response identifiers and timestamps."""

from __future__ import annotations

import time
import uuid


# The instance that keeps state this process creates: set by a Ray Serve replica (cluster/replica.py)
# to its replica id, so that a stored response's id says where it lives and the ingress sends the
# calls that name it (retrieve, input items, delete, cancel, previous_response_id) there.
_home = ""


def set_home(name: str) -> None:
    global _home
    _home = name


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def item_id(prefix: str) -> str:
    """OpenAI's style of object id (`resp_…`, `msg_…`, `fc_…`)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def stored_id(prefix: str) -> str:
    """An id for stored state: `prefix_HOME-HEX` on a cluster replica, `item_id` elsewhere."""
    return f"{prefix}_{_home}-{uuid.uuid4().hex}" if _home else item_id(prefix)


def home_of(stored: str) -> str | None:
    """The instance a stored id names (see stored_id), or None."""
    _, _, rest = stored.partition("_")
    home, dash, _ = rest.partition("-")
    return home if dash and home else None


def now() -> int:
    return int(time.time())
