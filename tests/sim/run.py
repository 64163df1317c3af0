"""bin/sim: run random seeds through the fault simulator, or replay one seed verbosely.

  bin/sim                                      run the default DEFAULT_SEED_COUNT seeds
  bin/sim --seeds 500 [--start 0] [--jobs 2]   run seeds start .. start+N-1
  bin/sim --seed 17                            replay one seed, printing every event

Exit status: 0 when every seed passed, 1 on any violation (the seed and a replay command
are printed), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time

from tests.sim.chaos import RunResult, run_seed

# What plain `bin/sim` runs; tests/sim/test_mutants.py shows that each known bug class fails
# within these seeds.
DEFAULT_SEED_COUNT = 300


def _run_quiet(arguments: tuple[int, int | None, bool | None]) -> RunResult:
    seed, fault_duration_ms, churn = arguments
    return run_seed(seed, verbose=False, fault_duration_ms=fault_duration_ms, churn=churn)


def default_seeds() -> range:
    return range(DEFAULT_SEED_COUNT)


def run_many(seeds: list[int], jobs: int = 1, fault_duration_ms: int | None = None, churn: bool | None = None):
    """Yield each seed's result (in seed order); `jobs` > 1 runs them in worker processes."""
    arguments = [(seed, fault_duration_ms, churn) for seed in seeds]
    if jobs <= 1:
        results = map(_run_quiet, arguments)
        yield from results
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_run_quiet, arguments, chunksize=4)


def _flags(options) -> str:
    """The options a replay needs besides the seed."""
    flags = ""
    if options.fault_ms is not None:
        flags += f" --fault-ms {options.fault_ms}"
    if options.churn is not None:
        flags += " --churn" if options.churn else " --no-churn"
    return flags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/sim", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=int, default=DEFAULT_SEED_COUNT,
                       help=f"how many random seeds to run (default {DEFAULT_SEED_COUNT})")
    group.add_argument("--seed", type=int, help="replay this one seed verbosely")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for --seeds (default 1)")
    parser.add_argument("--fault-ms", type=int, default=None, help="length of the fault phase in virtual ms")
    churn = parser.add_mutually_exclusive_group()
    churn.add_argument("--churn", dest="churn", action="store_const", const=True, help="membership churn in every run")
    churn.add_argument("--no-churn", dest="churn", action="store_const", const=False, help="no membership churn")
    parser.add_argument("--quiet", action="store_true", help="with --seed: only the summary, not every event")
    options = parser.parse_args(argv)
    # The driver logs what it drops (malformed forwards, rejected messages): expected under
    # chaos, noise here. Violations are reported by the checker.
    logging.getLogger("sandstore").setLevel(logging.ERROR)

    if options.seed is not None:
        result = run_seed(options.seed, not options.quiet, options.fault_ms, options.churn)
        if result.violation and result.traceback:
            print(result.traceback)
        print(result.summary())
        print(f"trace sha256 {result.trace_digest}")
        return 1 if result.violation else 0

    if options.seeds < 1 or options.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    seeds = list(range(options.start, options.start + options.seeds))
    started = time.monotonic()
    failed: list[RunResult] = []
    for done, result in enumerate(run_many(seeds, options.jobs, options.fault_ms, options.churn), start=1):
        if result.violation:
            failed.append(result)
            print(f"FAIL seed {result.seed}: {result.violation}")
            print(f"     replay: bin/sim --seed {result.seed}{_flags(options)}")
            sys.stdout.flush()
        if done % 50 == 0 or done == len(seeds):
            elapsed = time.monotonic() - started
            print(f"{done}/{len(seeds)} seeds, {len(failed)} failed, {elapsed:.1f}s")
            sys.stdout.flush()
    if failed:
        print(f"{len(failed)} of {len(seeds)} seeds violated an invariant: {[r.seed for r in failed]}")
        return 1
    print(f"all {len(seeds)} seeds passed (seeds {seeds[0]}..{seeds[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
