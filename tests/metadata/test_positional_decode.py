"""A version 2 command whose arguments have the types its op takes is checked where it stands
(commands._decoded_positional); any other goes through validate_args from a keyed dict. Both
paths must accept and refuse alike, with the same error."""

from __future__ import annotations

import random

import msgpack
import pytest

from node.errors import SandStoreError
from node.metadata import commands
from node.metadata.commands import decode_command, new_command
from node.protocol import CLIENT_ID_BYTES_MAX, COMMAND_OPS

# Values of each type a decoded argument may have, valid or not for the op (the value checks
# then refuse some: a bad mode, size, chunk id...).
SAMPLES: dict[type, list[object]] = {
    str: ["/a", "//a/b/", "relative", "f", "a/b", "n1", ""],
    bytes: [b"x", b"c" * 32, b""],
    int: [1, 0, -1, 0o10000, 1 << 62],
    bool: [True, False],
    list: [[[b"c" * 32, 1, ["n1"]]], [], [["bad"]]],
    type(None): [None],
    float: [1.0],
    dict: [{"a": 1}],
}


def _outcome(decode):
    try:
        return decode()
    except SandStoreError as error:
        return type(error), str(error)


def _keyed(op, client, seq, now_ns, arguments):
    """The command new_command builds from the same arguments, keyed (what the slow path does)."""
    args = {name: value for name, value in zip(commands._ARGUMENT_NAMES[op], arguments) if value is not None}
    return _outcome(lambda: new_command(op, {**args, "client": client, "seq": seq}, now_ns))


def _positional(op, client, seq, now_ns, arguments):
    return _outcome(lambda: decode_command(msgpack.packb([2, op, client, seq, now_ns, arguments], use_bin_type=True)))


SEED = 20261202
ALL_SAMPLES = [value for values in SAMPLES.values() for value in values]


def _cases(op, count):
    """Argument lists of op, seeded: mostly of the types the op takes (so the value checks are
    reached), sometimes any type at a position."""
    rng = random.Random(f"{SEED}-{op}")
    # The types each position takes (a tuple never comes out of msgpack: it packs as a list).
    kinds_at = [sorted({signature[position] for signature in commands._VALID_SIGNATURES[op]} - {tuple}, key=repr)
                for position in range(len(commands._ARGUMENT_NAMES[op]))]
    for _ in range(count):
        yield [rng.choice(ALL_SAMPLES) if rng.random() < 0.1 else rng.choice(SAMPLES[rng.choice(kinds)])
               for kinds in kinds_at]


@pytest.mark.parametrize("op", sorted(COMMAND_OPS))
def test_the_positional_check_agrees_with_validate_args(op):
    print("seed", SEED)
    outcomes = set()
    for arguments in _cases(op, 3000):
        outcome = _positional(op, "c1", 7, 5, arguments)
        assert outcome == _keyed(op, "c1", 7, 5, arguments), arguments
        outcomes.add("ok" if isinstance(outcome, commands.Command) else outcome[1].split(" ")[0])
    assert "ok" in outcomes and len(outcomes) > 3, outcomes  # both accepted and refused ones, of several kinds


@pytest.mark.parametrize("op", sorted(COMMAND_OPS))
def test_every_valid_signature_decodes_as_new_command_builds_it(op):
    # One argument list per signature the fast path takes: the same Command as the keyed path.
    for signature in sorted(commands._VALID_SIGNATURES[op], key=repr):
        if tuple in signature:
            continue  # msgpack decodes no tuple
        arguments = [SAMPLES[kind][0] for kind in signature]
        assert _positional(op, "c1", 7, 5, arguments) == _keyed(op, "c1", 7, 5, arguments), signature


@pytest.mark.parametrize("client, seq", [
    ("", 1), ("x" * CLIENT_ID_BYTES_MAX, 1), ("x" * (CLIENT_ID_BYTES_MAX + 1), 1), ("é" * 32, 1), ("é" * 33, 1),
    ("c", 0), ("c", -1), ("c", True), ("c", 1.0), ("c", 1 << 62), ("c", (1 << 62) - 1), (None, 1), (b"c", 1), ("c", None),
])
def test_sessions_are_checked_alike(client, seq):
    arguments = ["/a", False, 0o755]
    assert _positional("mkdir", client, seq, 5, arguments) == _keyed("mkdir", client, seq, 5, arguments)


@pytest.mark.parametrize("now_ns", [0, -1, True, 1.5, None, "1"])
def test_time_stamps_are_checked_alike(now_ns):
    arguments = ["/a", False, 0o755]
    assert _positional("mkdir", "c", 1, now_ns, arguments) == _keyed("mkdir", "c", 1, now_ns, arguments)


def test_a_malformed_positional_command_is_refused_with_validate_args_message():
    outcome = _positional("write_file", "c", 1, 1, ["/f", b"x", None, 1, 0o644, False, None, "yes"])
    assert outcome == (commands.BadRequest, "argument 'overwrite' must be bool, got str")
    outcome = _positional("mkdir", "c", 1, 1, ["/a", False, True])
    assert outcome == (commands.BadRequest, "argument 'mode' must be int, got bool")
    outcome = _positional("mkdir", "c", 1, 1, [None, False, 0o755])
    assert outcome == (commands.BadRequest, "missing argument 'path' for mkdir")
