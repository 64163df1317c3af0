"""Random seeds through the fault simulator, and the determinism of a run.

SIM_SEEDS / SIM_START widen or move the range (e.g. SIM_SEEDS=5000). A failing seed is
replayed with `bin/sim --seed S`, which prints every event.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.sim import chaos
from tests.sim.chaos import run_seed
from tests.sim.mutants import FIGURE_8_VIOLATION, drop_figure_8_rule
from tests.sim.run import DEFAULT_SEED_COUNT

SEED_COUNT = int(os.environ.get("SIM_SEEDS", str(DEFAULT_SEED_COUNT)))  # what bin/sim runs by default
SEED_START = int(os.environ.get("SIM_START", "0"))
CHUNKS = 10


def _chunk(number: int) -> range:
    size = -(-SEED_COUNT // CHUNKS)
    low = SEED_START + number * size
    return range(low, min(low + size, SEED_START + SEED_COUNT))


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_seeds(chunk: int) -> None:
    seeds = _chunk(chunk)
    print(f"seeds {seeds.start}..{seeds.stop - 1}")
    failures = []
    for seed in seeds:
        result = run_seed(seed)
        if result.violation:
            failures.append(f"seed {seed}: {result.violation}\n    replay: bin/sim --seed {seed}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("seed", [3, 77])
def test_same_seed_same_trace(seed: int) -> None:
    first, second = run_seed(seed), run_seed(seed)
    print(f"seed {seed}: {first.event_count} events, trace {first.trace_digest[:16]}")
    assert first.event_count > 100
    assert first.trace_digest == second.trace_digest
    assert first.summary() == second.summary()


def test_leader_hunting_runs_catch_a_core_without_the_figure_8_rule(monkeypatch) -> None:
    """Random runs reach figure 8 on their own: with the rule dropped from the core (an
    in-memory mutant), leader-hunting runs report it within a few seeds. About one such run in
    seven does, so 60 seeds all passing by chance would take odds of about 1 in 10,000."""
    drop_figure_8_rule(monkeypatch)
    monkeypatch.setattr(chaos, "LEADER_HUNT_SHARE", 1.0)
    for seed in range(60):
        result = run_seed(seed)
        if result.violation:
            print(f"seed {seed}: {result.violation}")
            assert re.search(FIGURE_8_VIOLATION, result.violation), result.violation
            return
    pytest.fail("60 leader-hunting runs missed a core that commits entries of earlier terms by counting")


def test_different_seeds_differ() -> None:
    assert run_seed(1).trace_digest != run_seed(2).trace_digest


def test_replay_in_a_fresh_process_gives_the_same_trace() -> None:
    """String hashing differs per process (PYTHONHASHSEED): a replay must not depend on it."""
    import subprocess
    import sys

    expected = run_seed(5).trace_digest
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for hash_seed in ("1", "2"):
        output = subprocess.run(
            [sys.executable, "-m", "tests.sim.run", "--seed", "5", "--quiet"],
            cwd=root,
            env=dict(os.environ, PYTHONHASHSEED=hash_seed),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"trace sha256 {expected}" in output, output
