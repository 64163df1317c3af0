"""Path normal form and the small helpers built on it."""

from __future__ import annotations

import random

import pytest

from node.errors import InvalidPath
from node.metadata import paths
from node.metadata.paths import base_name, components, is_within, join, normalize_path, parent_of


@pytest.mark.parametrize(
    "given, normal",
    [("/", "/"), ("//", "/"), ("/a", "/a"), ("/a/", "/a"), ("//a///b//", "/a/b"), ("/é/ü", "/é/ü"), ("/a b/.c", "/a b/.c")],
)
def test_normal_forms(given, normal):
    assert normalize_path(given) == normal
    assert normalize_path(normal) == normal


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("", "absolute"),
        ("a/b", "absolute"),
        ("/a/./b", "'.' or '..'"),
        ("/a/..", "'.' or '..'"),
        ("/..", "'.' or '..'"),
        ("/a\0b", "NUL"),
        ("/" + "x" * 256, "255"),
        ("/" + "é" * 128, "255"),  # 256 bytes in UTF-8
        ("/" + "/".join(["x" * 200] * 21), "4096"),
        ("/\udc80", "UTF-8"),
    ],
)
def test_invalid_paths_say_why(bad, reason):
    with pytest.raises(InvalidPath, match=reason.replace(".", r"\.")):
        normalize_path(bad)


def test_limits_are_inclusive():
    assert normalize_path("/" + "x" * 255) == "/" + "x" * 255
    longest = "/" + "/".join(["x" * 255] * 16)[: 4095]
    assert len(normalize_path(longest).encode()) == 4096


def test_helpers():
    assert components("/") == []
    assert components("/a/b") == ["a", "b"]
    assert parent_of("/a") == "/"
    assert parent_of("/a/b") == "/a"
    assert base_name("/a/b") == "b"
    assert join("/", "a") == "/a"
    assert join("/a", "b") == "/a/b"


def test_is_within():
    assert is_within("/a", "/")
    assert is_within("/", "/")
    assert is_within("/a", "/a")
    assert is_within("/a/b/c", "/a")
    assert not is_within("/ab", "/a")
    assert not is_within("/", "/a")


def test_the_quick_test_for_a_normal_path_never_passes_anything_the_full_check_would_change():
    # normalize_path skips the full check for paths that plainly are normal (every path in a
    # log entry): it must accept nothing the full check would change or refuse.
    rng = random.Random(1234)
    pieces = ["/", "//", ".", "..", "a", "bc", "\0", "é", " ", "x" * 200, "y" * 256]
    accepted = 0
    for _ in range(20000):
        path = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 9)))
        if not paths._is_plainly_normal(path):
            continue
        accepted += 1
        assert paths._normalized(path) == path, path
    assert accepted > 200
    long_path = "/" + "/".join(["d" * 200] * 30)  # components fine, the whole too long
    assert not paths._is_plainly_normal(long_path)
    with pytest.raises(InvalidPath):
        normalize_path(long_path)
