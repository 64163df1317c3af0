"""The one rule for a node id, used everywhere a node id arrives: the config's [[nodes]].id,
peer frames, membership changes (add_learner, promote, remove_node; in the request and again
when a conf change is applied), and key names in the keys directory. One rule, so a committed
membership change can never name an id that a node cannot start with.
"""

from __future__ import annotations

NODE_ID_BYTES_MAX = 64
NODE_ID_RULE = f"1-{NODE_ID_BYTES_MAX} ASCII letters, digits, - or _"
# Ids already found valid, looked up before the rule is checked again: every peer message names
# two or three (the peer codec and transport check each), about 7 checks per write on a leader,
# and the rule's string copies cost several times a set lookup. A cluster has a few ids; the
# set stops growing at this many (later ones are checked in full each time).
VALID_IDS_REMEMBERED_MAX = 1024
_valid_ids: set[str] = set()


def is_valid_node_id(value: object) -> bool:
    """Whether `value` is a node id: a str of NODE_ID_RULE. Never raises."""
    if type(value) is not str:
        return False
    if value in _valid_ids:
        return True
    valid = (0 < len(value) <= NODE_ID_BYTES_MAX
             and value.isascii()
             and value.replace("-", "").replace("_", "").isalnum())
    if valid and len(_valid_ids) < VALID_IDS_REMEMBERED_MAX:
        _valid_ids.add(value)
    return valid
