"""The node id rule (node/names.py) gives the same answer however often an id is asked."""

from __future__ import annotations

import pytest

from node.names import NODE_ID_BYTES_MAX, is_valid_node_id

VALID = ["n1", "node-2", "a_b", "x" * NODE_ID_BYTES_MAX, "N9"]
INVALID = ["", "x" * (NODE_ID_BYTES_MAX + 1), "n 1", "n/1", "nœ", "n1\n", "-", "__"]
NOT_STRINGS = [None, 1, b"n1", ["n1"], {"n1": 1}, ("n1",), 1.5, True]


class IdLike(str):
    """A str subclass: never a node id (ids are exactly str, as msgpack decodes them)."""


@pytest.mark.parametrize("value", VALID)
def test_a_valid_id_is_valid_every_time_it_is_asked(value):
    assert [is_valid_node_id(value) for _ in range(3)] == [True, True, True]


@pytest.mark.parametrize("value", INVALID)
def test_an_id_against_the_rule_is_refused_every_time_it_is_asked(value):
    assert [is_valid_node_id(value) for _ in range(3)] == [False, False, False]


@pytest.mark.parametrize("value", NOT_STRINGS)
def test_values_that_are_not_strings_are_refused_without_raising(value):
    assert not is_valid_node_id(value)


def test_a_str_subclass_is_refused_even_when_its_text_was_found_valid():
    assert is_valid_node_id("n1")
    assert not is_valid_node_id(IdLike("n1"))
