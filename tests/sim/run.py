"""Running one seed, and a sweep of seeds, with a replay line for every failure."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import invariants
from .scenario import make_plan
from .world import Report, World


@dataclass
class Outcome:
    profile: str
    seed: int
    violations: list[str]
    report: Report

    @property
    def ok(self) -> bool:
        return not self.violations

    def replay_line(self) -> str:
        return (
            f"SIM_PROFILE={self.profile} SIM_SEED={self.seed} "
            "python -m pytest tests/sim -k test_replay -s"
        )

    def describe(self) -> str:
        lines = [f"seed {self.seed} ({self.profile}): {len(self.violations)} violation(s)"]
        lines += [f"  {v}" for v in self.violations[:8]]
        lines.append(f"  replay: {self.replay_line()}")
        return "\n".join(lines)


def run_seed(profile: str, seed: int) -> Outcome:
    report = World(make_plan(profile, seed)).run()
    return Outcome(profile, seed, invariants.check(report), report)


def seed_count(default: int) -> int:
    return int(os.environ.get("SIM_SEEDS", default))


def sweep(profile: str, count: int, first: int = 0, stop_after: int = 10) -> list[Outcome]:
    """Run seeds ``first .. first+count-1``; the failing outcomes (at most ``stop_after``)."""
    failed = []
    for seed in range(first, first + count):
        outcome = run_seed(profile, seed)
        if not outcome.ok:
            failed.append(outcome)
            if len(failed) >= stop_after:
                break
    return failed
