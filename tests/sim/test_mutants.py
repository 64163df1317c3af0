"""Each known bug class makes `bin/sim` (its default seeds) fail: the simulator sees it.

A mutant (tests/sim/mutants.py) breaks the core or the production driver in memory; the test
runs bin/sim's default seed range through the run API and passes at the first seed whose
violation is the one the mutant must cause. bin/sim stops at nothing, so a mutant caught at
seed S makes `bin/sim` fail too.
"""

from __future__ import annotations

import logging
import re

import pytest

from tests.sim.chaos import run_seed
from tests.sim.mutants import MUTANTS
from tests.sim.run import default_seeds


@pytest.mark.parametrize("mutant", MUTANTS, ids=[mutant.name for mutant in MUTANTS])
def test_bin_sim_default_seeds_catch_the_mutant(mutant, monkeypatch) -> None:
    logging.getLogger("sandstore").setLevel(logging.ERROR)  # dropped messages are expected here
    mutant.apply(monkeypatch)
    for seed in default_seeds():
        result = run_seed(seed)
        if result.violation:
            print(f"{mutant.name}: seed {seed}: {result.violation}")
            assert re.search(mutant.violation, result.violation), result.violation
            return
    pytest.fail(f"{len(default_seeds())} seeds of bin/sim missed the mutant: {mutant.name}")
