"""Node identities in the simulation: named runs with an impostor (issue 13, item 3).

An impostor runs under a real node's name, with the codekey if the cluster has one and an
allowlist like everyone's, but with its own key, which no allowlist lists. The sweep's
``identities`` profile draws such runs at random; these are the cases worth naming.
"""

from __future__ import annotations

import random

import pytest

from . import adapter, invariants
from .adapter import NodeParams
from .apps import End, Ending
from .broker import Faults
from .scenario import CODEKEY, IMPOSTOR, ClientPlan, Event, Plan
from .test_scenarios import fixed_script
from .world import World

CODEKEYS = pytest.mark.parametrize("codekey", [None, CODEKEY], ids=["identities", "and-codekey"])


def keys(*names: str, seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {name: rng.randbytes(32) for name in names}


def identities_plan(
    clients: list[ClientPlan],
    events: list[Event] = (),
    *,
    codekey: str | None,
    impostor_key: bytes | None = None,
    claimed: str = "so",
    fault_time: float = 10.0,
    expect_complete: bool = False,
) -> Plan:
    """``so`` and ``si`` with identities (each lists both); with ``impostor_key``, an
    impostor ``imp`` posing as ``claimed`` with that key."""
    private = keys("so", "si")
    allow = {name: adapter.public_key(key) for name, key in private.items()}
    params = {
        name: NodeParams(codekey=codekey, identity=private[name], peer_keys=allow)
        for name in ("so", "si")
    }
    plan = Plan(
        seed=0,
        profile="scenario",
        sources=["so"],
        sinks=["si"],
        params=params,
        skew={"so": 0.0, "si": 0.0, IMPOSTOR: 0.0},
        brokers=1,
        faults=Faults(latency=(0.005, 0.005)),
        clients=list(clients),
        events=list(events),
        fault_time=fault_time,
        expect_complete=expect_complete,
    )
    if impostor_key is not None:
        plan.impostors[IMPOSTOR] = claimed
        plan.params[IMPOSTOR] = NodeParams(
            codekey=codekey,
            identity=impostor_key,
            peer_keys={**allow, claimed: adapter.public_key(impostor_key)},
        )
    return plan


def real(at: float, index: int, size: int = 3000, answer: int = 20000) -> ClientPlan:
    request = fixed_script(size, Ending.EOF, seed=index)
    return ClientPlan(
        index,
        "so",
        "si",
        at,
        False,
        f"t{index}.example",
        request,
        fixed_script(answer, Ending.EOF, seed=100 + index),
    )


def intruding(at: float, index: int, *, direct: bool = False) -> ClientPlan:
    return ClientPlan(
        index,
        IMPOSTOR,
        "si",
        at,
        direct,
        f"t{index}.example",
        fixed_script(500, Ending.EOF, seed=index),
        fixed_script(500, Ending.EOF, seed=100 + index),
    )


def violations(report) -> str:
    return "\n".join(invariants.check(report))


@pytest.mark.parametrize(
    "claimed,reason", [("so", "peer-key"), ("zz", "unknown-peer")], ids=["so", "unlisted"]
)
@CODEKEYS
def test_an_impostor_source_reaches_no_target_and_the_real_one_completes(
    codekey, claimed: str, reason: str
) -> None:
    """The impostor (``so``'s name, or a name no allowlist has) is up before the sink's
    first HELLO, so it runs a handshake with the sink, which refuses it (``peer-key``,
    ``unknown-peer``); its streams (forward and direct) end in a reset once their wait is
    over, none reaches a target; the real ``so``'s streams, before, among and after the
    impostor's, complete in full."""
    clients = [real(1.0, 0), intruding(2.0, 1), intruding(2.5, 2, direct=True), real(3.0, 3)]
    clients += [real(14.0, 4)]
    p = identities_plan(
        clients,
        codekey=codekey,
        impostor_key=keys("x", seed=99)["x"],
        claimed=claimed,
        expect_complete=True,
    )
    world = World(p)
    report = world.run()
    assert report.quiet
    assert not invariants.check(report), violations(report)
    for record in report.clients:
        if record.plan.source == IMPOSTOR:
            assert record.app.end is End.RESET, record.app.end
            assert not report.targets.get(record.key)
    refused = adapter.refusals(world.processes["si"].node)
    assert refused.get(reason, 0) >= 1, refused


@CODEKEYS
def test_an_impostor_sink_serves_nothing(codekey) -> None:
    """An impostor posing as the sink hears everything sent to ``si`` (it subscribes to the
    same destination) but can open none of it: it connects no target, and ``so``'s
    streams complete with the real sink."""
    clients = [real(1.0, 0), real(3.0, 1), real(6.0, 2)]
    p = identities_plan(
        clients,
        codekey=codekey,
        impostor_key=keys("x", seed=98)["x"],
        claimed="si",
        expect_complete=True,
    )
    p.skew[IMPOSTOR] = 0.0
    report = World(p).run()
    assert report.quiet
    assert not invariants.check(report), violations(report)
    assert not report.made_by.get(IMPOSTOR)


def test_the_impostor_invariant_has_teeth() -> None:
    """The yardstick: an "impostor" that holds ``so``'s real key is ``so`` as far as anyone
    can tell, and its streams do reach targets; the invariant must say so."""
    p = identities_plan(
        [intruding(2.0, 0), intruding(3.0, 1, direct=True)],
        codekey=None,
        impostor_key=keys("so", "si")["so"],
    )
    # A run with the real so off the bus: the "impostor" is the only so.
    p.params["so"] = NodeParams(identity=None)
    p.sources = []
    report = World(p).run()
    found = invariants.check(report)
    assert any(v.startswith("impostor:") for v in found), found


@pytest.mark.parametrize("dead", ["so", "si"])
@CODEKEYS
def test_an_impostor_does_not_keep_a_dead_peers_streams_alive(codekey, dead: str) -> None:
    """The real ``so`` (or ``si``) dies (SIGKILL) with a kept-alive stream open and stays
    down for 35 s; an impostor under its name is on the bus all along (it gets what is sent
    to that name). The other end of the stream must still end within the grace period (the
    client or the target sees a reset): only the session's peer proves that the peer is
    alive, and the impostor cannot speak in that session."""
    hold = fixed_script(200, Ending.HOLD, hold_until=60.0)
    kept = ClientPlan(0, "so", "si", 1.0, False, "t0.example", hold, fixed_script(300, Ending.EOF))
    p = identities_plan(
        [kept],
        [Event(3.0, "restart", dead, duration=35.0)],
        codekey=codekey,
        impostor_key=keys("x", seed=97)["x"],
        claimed=dead,
        fault_time=40.0,
    )
    report = World(p).run()
    grace = [v for v in invariants.check(report) if v.startswith("grace:")]
    assert not grace, "\n".join(grace)


@pytest.mark.parametrize("dead", ["so", "si"])
@CODEKEYS
def test_without_an_impostor_a_dead_peers_streams_end_within_the_grace_period(
    codekey, dead: str
) -> None:
    """The control of the test above: the same run without the impostor passes."""
    hold = fixed_script(200, Ending.HOLD, hold_until=60.0)
    kept = ClientPlan(0, "so", "si", 1.0, False, "t0.example", hold, fixed_script(300, Ending.EOF))
    p = identities_plan([kept], [Event(3.0, "restart", dead, duration=35.0)], codekey=codekey)
    p.fault_time = 40.0
    report = World(p).run()
    assert not invariants.check(report), violations(report)
