"""The seed sweep: many random runs per fault profile, every invariant checked after each.

``SIM_SEEDS`` sets the seeds per profile (default below), ``SIM_FIRST_SEED`` the first one
(CI may move it on to see new seeds). A failure lists its seeds and the line that replays
each exactly; ``SIM_PROFILE=<p> SIM_SEED=<n> pytest tests/sim -k test_replay`` is that replay.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from . import invariants
from .run import Outcome, run_seed, seed_count, sweep
from .scenario import PROFILES, make_plan
from .world import World

#: Seeds per profile by default: 3,200 runs in all (8 profiles), about 45 s on one core.
DEFAULT_SEEDS = 400


@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", PROFILES)
def test_sweep(profile: str) -> None:
    count = seed_count(DEFAULT_SEEDS)
    first = int(os.environ.get("SIM_FIRST_SEED", "0"))
    failed = sweep(profile, count, first)
    if failed:
        shown = "\n".join(outcome.describe() for outcome in failed)
        pytest.fail(
            f"{len(failed)} of the seeds {first}..{first + count - 1} of profile {profile} "
            f"failed (stopped after {len(failed)}):\n{shown}",
            pytrace=False,
        )


def test_replay() -> None:
    """Replay one seed exactly and show it:
    ``SIM_PROFILE=outages SIM_SEED=17 pytest tests/sim -k test_replay -s``; with
    ``SIM_LOG=1`` the nodes' log lines too (simulated times)."""
    seed = os.environ.get("SIM_SEED")
    if seed is None:
        pytest.skip("set SIM_SEED (and SIM_PROFILE, default calm) to replay a seed")
    profile = os.environ.get("SIM_PROFILE", "calm")
    world = World(make_plan(profile, int(seed)))

    def show(event: dict) -> None:
        where = event.get("log_namespace", "").rsplit(".", 1)[-1]
        print(f"  t={world.clock.seconds():.4f} {where}: {formatEvent(event)}")

    logging = bool(os.environ.get("SIM_LOG"))
    if logging:
        globalLogPublisher.addObserver(show)
    try:
        report = world.run()
    finally:
        if logging:
            globalLogPublisher.removeObserver(show)
    outcome = Outcome(profile, int(seed), invariants.check(report), report)
    report = outcome.report
    plan = report.plan
    print(
        f"\n{profile} seed {seed}: sources {plan.sources}, sinks {plan.sinks}, "
        f"brokers {plan.brokers}, {plan.faults}"
    )
    print(
        f"  windows { ({n: p.window for n, p in plan.params.items()}) }, "
        f"skew { ({n: round(s, 1) for n, s in plan.skew.items()}) }"
    )
    for event in plan.events:
        print(f"  t={event.at:.2f} {event.kind} {event.node} {event.detail} {event.duration:.2f}s")
    for name, process in report.processes.items():
        print(
            f"  {name}: connects {[round(t, 2) for t in process.connects]}, "
            f"deaths {[round(t, 2) for t in process.deaths]}"
        )
    print(f"ended at t={report.end_time:.2f}, quiet={report.quiet}, broker {report.stats}")
    for record in report.clients:
        app, c = record.app, record.plan
        targets = [
            (len(t.received), t.written, t.end and t.end.value)
            for t in report.targets.get(record.key, [])
        ]
        print(
            f"  client{c.index} at t={c.at:.2f} {record.key} {'direct' if c.direct else 'fwd'}"
            f" {c.client.ending.value}/{c.target.ending.value}: wrote {app.written}, got "
            f"{len(app.received)}, eof={app.eof}, end={app.end and app.end.value}"
            f"@{app.end_time or 0:.2f}; targets (got, wrote, end)={targets}"
        )
    assert outcome.ok, outcome.describe()


def fingerprint(profile: str, seed: int) -> str:
    """Everything observable about a run, hashed: equal fingerprints, equal runs."""
    report = run_seed(profile, seed).report
    h = hashlib.sha256()
    h.update(repr((report.end_time, report.quiet, sorted(report.stats.items()))).encode())
    for record in report.clients:
        app = record.app
        h.update(repr((record.key, app.end, app.end_time, app.eof)).encode())
        h.update(bytes(app.received))
        for target in report.targets.get(record.key, []):
            h.update(repr((target.end, target.end_time)).encode())
            h.update(bytes(target.received))
    return h.hexdigest()


@pytest.mark.parametrize(
    "profile,seed", [("harsh", 3), ("sealed", 5), ("strangers", 8), ("identities", 1)]
)
def test_a_seed_replays_exactly(profile: str, seed: int) -> None:
    """Same seed, same run: twice here, and in a child with another str hash seed."""
    here = fingerprint(profile, seed)
    assert fingerprint(profile, seed) == here
    code = (
        "import sys; sys.path.insert(0, 'tests'); from sim.test_sweep import fingerprint; "
        f"print(fingerprint({profile!r}, {seed}))"
    )
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONHASHSEED="12345")
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == here
