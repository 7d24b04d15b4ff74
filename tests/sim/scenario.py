"""A run's whole plan, drawn from its seed before the run starts.

The plan (nodes, windows, clients and their scripts, the fault schedule) comes from
``random.Random(seed)`` alone, so a seed names the same faults whatever the code under test
does; what varies at run time (latencies, duplicates) comes from a second generator seeded
from the same seed. A profile chooses which faults a sweep draws.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .adapter import NodeParams, public_key
from .apps import Ending, Script
from .broker import Faults

#: Profiles of the sweep, each a family of faults (docs/simulation.rst).
PROFILES = (
    "calm",
    "outages",
    "restarts",
    "strangers",
    "sealed",
    "windows",
    "harsh",
    "identities",
)

CODEKEY = "sim-codekey-not-secret"
CLUSTER, TOPIC = "simc", "simt"


@dataclass
class ClientPlan:
    """One client connection: where it goes, what both ends write, how they end."""

    index: int
    source: str
    sink: str
    at: float
    direct: bool  # on the stream itself (socketeer connect), else through the fixed forward
    host: str
    client: Script
    target: Script


@dataclass
class Event:
    """A fault at ``at`` seconds: ``kind`` with its arguments."""

    at: float
    kind: str  # disconnect, broker-crash, restart, forge, replay
    node: str = ""
    index: int = 0
    duration: float = 0.0
    detail: str = ""


@dataclass
class Plan:
    seed: int
    profile: str
    sources: list[str]
    sinks: list[str]
    params: dict[str, NodeParams]
    skew: dict[str, float]
    brokers: int
    faults: Faults
    clients: list[ClientPlan]
    events: list[Event]
    fault_time: float = 20.0
    quiesce_time: float = 45.0
    #: No fault in this run may cost a stream: every stream must complete in full.
    expect_complete: bool = False
    notes: list[str] = field(default_factory=list)
    #: Impostor processes (name in ``params``, clients and events -> the node name they
    #: claim): a valid name, the codekey if there is one, but a key no allowlist has.
    impostors: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return self.sources + self.sinks

    def node_name(self, process: str) -> str:
        """The node name ``process`` runs under (an impostor's is someone else's)."""
        return self.impostors.get(process, process)


def script(
    rng: random.Random, size: int, ending: Ending, *, pause: float = 0.0, max_chunk: int = 4096
) -> Script:
    chunks: list[int] = []
    left = size
    while left > 0:
        n = min(left, rng.randint(64, max_chunk))
        chunks.append(n)
        left -= n
    pauses: tuple[tuple[float, float], ...] = ()
    if pause and rng.random() < pause:
        pauses = tuple(
            (rng.uniform(0.0, 1.0), rng.uniform(0.1, 3.0)) for _ in range(rng.randint(1, 2))
        )
    return Script(
        payload=rng.randbytes(size),
        chunks=chunks,
        gap=rng.choice((0.0, 0.001, 0.01, 0.05)),
        start=rng.uniform(0.0, 0.2),
        ending=ending,
        pauses=pauses,
    )


def size_for(rng: random.Random, window: int) -> int:
    kind = rng.random()
    if kind < 0.15:
        return 0
    if kind < 0.5:
        return rng.randint(1, 600)
    if kind < 0.8:
        return rng.randint(600, window)
    return rng.randint(window, 3 * window)


IMPOSTOR = "imp"


def impostor(plan: Plan, rng: random.Random, allowlist: dict[str, bytes]) -> None:
    """Add an impostor: a process running under a real node's name, with the run's codekey
    (if any) and an allowlist like everyone's, but its own key, which no one lists. Posing
    as a source it opens streams to the sinks; posing as a sink it listens on the sink's
    destination (and would serve what it could open)."""
    claimed = rng.choice(plan.sources) if rng.random() < 0.75 else rng.choice(plan.sinks)
    own = rng.randbytes(32)
    like = plan.params[claimed]
    plan.impostors[IMPOSTOR] = claimed
    plan.params[IMPOSTOR] = NodeParams(
        window=like.window,
        codekey=like.codekey,
        identity=own,
        peer_keys={**allowlist, claimed: public_key(own)},
    )
    plan.skew[IMPOSTOR] = rng.uniform(-30.0, 30.0)
    if claimed not in plan.sources:
        return
    small = min(p.window for p in plan.params.values())
    for _ in range(rng.randint(1, 3)):
        plan.clients.append(
            ClientPlan(
                index=len(plan.clients),
                source=IMPOSTOR,
                sink=rng.choice(plan.sinks),
                at=rng.uniform(0.5, plan.fault_time * 0.8),
                direct=rng.random() < 0.3,
                host=f"t{len(plan.clients)}.example",
                client=script(rng, size_for(rng, small), Ending.EOF, pause=0.4),
                target=script(rng, size_for(rng, small), Ending.EOF, pause=0.4),
            )
        )


def make_plan(profile: str, seed: int) -> Plan:
    """The plan for ``seed`` in ``profile`` (deterministic)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
    rng = random.Random(f"{profile}:{seed}")  # str seeds hash with sha512: stable
    sources = ["so"] if rng.random() < 0.7 else ["so", "so2"]
    sinks = ["si"] if rng.random() < 0.8 else ["si", "si2"]
    nodes = sources + sinks
    window = rng.choice((4096, 8192, 16384, 32768))
    codekey = CODEKEY if profile == "sealed" else None
    identities: dict[str, bytes] = {}
    if profile == "identities":
        codekey = CODEKEY if rng.random() < 0.5 else None
        # Node keys from the seed (Identity.from_bytes), every node listing every node.
        identities = {name: rng.randbytes(32) for name in nodes}
    allowlist = {name: public_key(key) for name, key in identities.items()}
    params = {}
    for name in nodes:
        w = window
        if profile == "windows":
            w = rng.choice((4096, 8192, 16384, 65536))
        params[name] = NodeParams(
            window=w,
            codekey=codekey,
            identity=identities.get(name),
            peer_keys=allowlist or None,
        )
    skew = {name: rng.uniform(-30.0, 30.0) for name in nodes}
    brokers = rng.choice((1, 1, 2, 3))
    faults = Faults(duplicate=rng.choice((0.0, 0.0, 0.01, 0.05)))
    if profile == "harsh":
        faults.harsh = True
        faults.loss = rng.choice((0.001, 0.01, 0.03))
        faults.reorder = rng.choice((0.01, 0.05, 0.2))
        faults.duplicate = rng.choice((0.0, 0.01, 0.05))
    plan = Plan(seed, profile, sources, sinks, params, skew, brokers, faults, [], [])
    small = min(p.window for p in params.values())
    for i in range(rng.randint(2, 6)):
        source, sink = rng.choice(sources), rng.choice(sinks)
        client_end = rng.choices(
            (Ending.EOF, Ending.CLOSE_AFTER_EOF, Ending.CLOSE, Ending.HOLD), weights=(6, 2, 2, 2)
        )[0]
        if client_end in (Ending.CLOSE_AFTER_EOF, Ending.HOLD):
            target_end = rng.choice((Ending.EOF, Ending.CLOSE))
        else:
            target_end = rng.choices(
                (Ending.EOF, Ending.CLOSE_AFTER_EOF, Ending.CLOSE), weights=(4, 4, 2)
            )[0]
        client = script(rng, size_for(rng, small), client_end, pause=0.4)
        if client_end is Ending.HOLD:  # a kept-alive connection, idle after its exchange
            client.hold_until = rng.uniform(1.0, 12.0)
        plan.clients.append(
            ClientPlan(
                index=i,
                source=source,
                sink=sink,
                # After every node's first connect (by 0.3 s): the start-up race is
                # the restarts' business, not a calm run's.
                at=rng.uniform(0.5, plan.fault_time * 0.8),
                direct=rng.random() < 0.3,
                host=f"t{i}.example",
                client=client,
                target=script(rng, size_for(rng, small), target_end, pause=0.4),
            )
        )
    if profile == "identities":
        impostor(plan, rng, allowlist)
    grace = params[nodes[0]].grace
    # Identities: half the runs with outages, a third with restarts (the rest must complete
    # in full, the impostor notwithstanding).
    outages = profile in ("outages", "sealed", "harsh")
    outages |= profile == "identities" and rng.random() < 0.5
    restart = profile in ("restarts", "sealed", "harsh")
    restart |= profile == "identities" and rng.random() < 0.35
    long_outage = False
    if outages:
        for _ in range(rng.randint(1, 4)):
            long = rng.random() < 0.2
            long_outage |= long
            duration = rng.uniform(grace, 2 * grace) if long else rng.uniform(0.05, 3.0)
            plan.events.append(
                Event(rng.uniform(0, plan.fault_time), "disconnect", rng.choice(nodes), 0, duration)
            )
        if rng.random() < 0.4:
            plan.events.append(
                Event(
                    rng.uniform(0, plan.fault_time),
                    "broker-crash",
                    index=rng.randrange(brokers),
                    duration=rng.uniform(0.05, 2.0),
                )
            )
    restarts = False
    if restart:
        for _ in range(rng.randint(1, 2)):
            restarts = True
            plan.events.append(
                Event(
                    rng.uniform(0, plan.fault_time),
                    "restart",
                    rng.choice(nodes),
                    index=rng.randrange(brokers),
                    duration=rng.uniform(0.1, 5.0),
                    detail="with-broker" if rng.random() < 0.5 else "",
                )
            )
    if profile in ("strangers", "sealed", "harsh"):
        for _ in range(rng.randint(2, 8)):
            plan.events.append(
                Event(
                    rng.uniform(0, plan.fault_time),
                    "forge",
                    rng.choice(nodes + ["stranger"]),
                    index=rng.randrange(1 << 30),
                    detail=rng.choice(("ping", "reset", "open")),
                )
            )
        for _ in range(rng.randint(2, 8)):
            plan.events.append(Event(rng.uniform(0, plan.fault_time * 1.5), "replay"))
    if profile == "identities":
        for _ in range(rng.randint(0, 4)):
            plan.events.append(Event(rng.uniform(0, plan.fault_time * 1.5), "replay"))
    plan.events.sort(key=lambda e: e.at)
    down: dict[str, float] = {}
    for e in plan.events:
        if e.kind == "disconnect":
            down[e.node] = down.get(e.node, 0.0) + e.duration
    plan.expect_complete = (
        not restarts
        and not long_outage
        and not faults.harsh
        and all(d < grace / 2 for d in down.values())
    )
    return plan
