"""The one rule for a node id, used everywhere a node id arrives: the config's [[nodes]].id,
peer frames, membership changes (add_learner, promote, remove_node; in the request and again
when a conf change is applied), and key names in the keys directory. One rule, so a committed
membership change can never name an id that a node cannot start with.
"""

from __future__ import annotations

NODE_ID_BYTES_MAX = 64
NODE_ID_RULE = f"1-{NODE_ID_BYTES_MAX} ASCII letters, digits, - or _"


def is_valid_node_id(value: object) -> bool:
    """Whether `value` is a node id: a str of NODE_ID_RULE. Never raises."""
    return (
        type(value) is str
        and 0 < len(value) <= NODE_ID_BYTES_MAX
        and value.isascii()
        and value.replace("-", "").replace("_", "").isalnum()
    )
