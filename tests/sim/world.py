"""The simulated world: processes running real nodes over the simulated broker and clock.

``World(plan).run()`` boots every process, starts the clients of the plan at their times,
applies the plan's faults, then lets the clock run on with no faults until everything is
quiet (or the quiesce time is up), and returns the :class:`Report` the invariants judge.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from . import adapter
from .apps import Ending, Endpoint, Script
from .broker import Hub, Link
from .net import HIGH_WATER, READ_SIZE, ProcessClock, SimTransport, address, socket_pair
from .scenario import CLUSTER, TOPIC, ClientPlan, Event, Plan

if TYPE_CHECKING:
    from socketeer.tunnel.node import Node

#: How often (simulated seconds) the memory bounds are sampled.
BOUNDS_EVERY = 0.25
#: Most violations of one kind a run keeps (the first ones tell the story).
KEEP = 5
#: Processes' clocks read the world's time plus this (a date in 2023) plus their skew:
#: timestamps on the wire are milliseconds since 1970, never negative.
EPOCH = 1_700_000_000.0
FORGED_TARGET = Script(b"", [], 0.0, 0.0, Ending.EOF)


@dataclass
class ClientRecord:
    plan: ClientPlan
    app: Endpoint
    key: tuple[str, str] | None = None  # (source node, stream id)


class Process:
    """One socketeer process: a node (and its sink or forward), its sockets, its life."""

    def __init__(self, world: World, name: str, sink: bool) -> None:
        self.world = world
        self.name = name
        #: The node name it runs under: its own, or (an impostor) the one it claims.
        self.node_name = world.plan.node_name(name)
        self.is_sink = sink
        self.params = world.plan.params[name]
        self.generation = 0
        self.alive = False
        self.node: Node | None = None
        self.clock: ProcessClock | None = None
        self.link: Link | None = None
        self.sockets: list[SimTransport] = []  # our ends of local sockets (this life)
        self.all_sockets: list[SimTransport] = []  # and of every life, for the bounds
        self.direct: list[Endpoint] = []  # endpoints running inside this process
        self.connects: list[float] = []  # world times of channel_ready
        self.deaths: list[float] = []  # world times of crashes
        self.incarnations: list[str] = []

    def boot(self) -> None:
        world = self.world
        self.generation += 1
        self.clock = ProcessClock(world.clock, EPOCH + world.plan.skew[self.name])
        incarnation = f"{self.name}g{self.generation}x{world.net_rng.getrandbits(40):010x}"
        self.incarnations.append(incarnation)
        epoch = f"{world.net_rng.getrandbits(128):032x}"
        self.node = adapter.new_node(
            CLUSTER, self.node_name, TOPIC, self.clock, incarnation, self.params, epoch
        )
        if self.is_sink:
            adapter.serve_sink(self.node, self._connect_target, self.clock, self.params)
        self.alive = True
        self.sockets = []
        self.direct = []
        world.later(world.net_rng.uniform(0.01, 0.3), self.connect, self.generation)

    def connect(self, generation: int, index: int | None = None) -> None:
        if not self.alive or generation != self.generation or self.link is not None:
            return
        world = self.world
        if index is None:
            index = world.net_rng.randrange(world.plan.brokers)
        subs = adapter.destinations(TOPIC, CLUSTER, self.node_name)
        node = self.node
        self.link = world.hub.attach(index, subs, lambda frame: world.deliver(self, node, frame))
        self.connects.append(world.clock.seconds())
        adapter.channel_up(self.node, self.link)

    def disconnect(self, down_for: float) -> None:
        if not self.alive or self.link is None:
            return
        self.world.hub.detach(self.link)
        self.link = None
        adapter.channel_down(self.node)
        self.world.later(down_for, self.connect, self.generation)

    def crash(self, boot_after: float) -> None:
        """SIGKILL: memory, timers and channel gone; local sockets are reset."""
        if not self.alive:
            return
        world = self.world
        self.alive = False
        self.deaths.append(world.clock.seconds())
        self.clock.kill()
        if self.link is not None:
            world.hub.detach(self.link)
            self.link = None
        for sock in self.sockets:
            sock.die()
        for app in self.direct:
            app.died()
        self.node = None
        world.later(boot_after, self.boot)

    # -- a sink's outbound connections ---------------------------------------------------

    def _connect_target(self, host: str, port: int, factory: Any) -> Deferred:
        d: Deferred = Deferred()
        world = self.world
        generation = self.generation

        def connected() -> None:
            if not self.alive or generation != self.generation or d.called:
                return
            if host == "refused.example":
                d.errback(ConnectionRefusedError(host))
                return
            world.target_serial += 1
            here = address("10.0.0.1", 40000 + world.target_serial)
            there = address("10.9.0.1", port)
            relay_end, target_end = socket_pair(world.clock, here, there)
            relay = factory.buildProtocol(there)
            relay_end.protocol = relay
            self.sockets.append(relay_end)
            self.all_sockets.append(relay_end)
            relay.makeConnection(relay_end)
            key = adapter.relay_stream_key(relay)
            record = world.by_key.get(key) if key is not None else None
            script = record.plan.target if record is not None else FORGED_TARGET
            label = f"target[{key[1] if key else '?'}]"
            app = Endpoint(world.clock, label, script)
            target_end.protocol = app
            world.targets.setdefault(key, []).append(app)
            world.made_by.setdefault(self.name, []).append(key)
            world.all_apps.append(app)
            app.makeConnection(target_end)
            d.callback(relay)

        world.later(world.net_rng.uniform(0.001, 0.2), connected)
        return d


@dataclass
class Report:
    """Everything a run leaves for the invariants."""

    plan: Plan
    end_time: float
    quiet: bool
    clients: list[ClientRecord]
    targets: dict
    processes: dict[str, Process]
    bounds: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    #: Process name -> the (peer, stream id) of every target connection it made.
    made_by: dict[str, list] = field(default_factory=dict)


class World:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.clock = Clock()
        self.net_rng = random.Random(f"net:{plan.profile}:{plan.seed}")
        self.hub = Hub(self.clock, self.net_rng, plan.brokers, plan.faults)
        self.processes: dict[str, Process] = {}
        for name in plan.sources:
            self.processes[name] = Process(self, name, sink=False)
        for name in plan.sinks:
            self.processes[name] = Process(self, name, sink=True)
        for name, claimed in plan.impostors.items():
            self.processes[name] = Process(self, name, sink=claimed in plan.sinks)
        self.clients: list[ClientRecord] = []
        self.by_key: dict[tuple[str, str], ClientRecord] = {}
        self.targets: dict[tuple[str, str] | None, list[Endpoint]] = {}
        self.all_apps: list[Endpoint] = []
        self.target_serial = 0
        self.made_by: dict[str, list] = {}
        self.client_serial = 0
        self.bounds: list[str] = []
        self.errors: list[str] = []
        self.quiet = False
        self.faults_over = max([plan.fault_time] + [e.at + e.duration + 1.0 for e in plan.events])

    def later(self, delay: float, f: Callable[..., object], *args: object) -> None:
        self.clock.callLater(delay, f, *args)

    def deliver(self, process: Process, node: Node, frame: Any) -> None:
        """A MESSAGE for ``node`` (the node of the connection it was subscribed on)."""
        if process.alive and process.node is node:
            adapter.deliver(node, frame)

    # -- clients -------------------------------------------------------------------------

    def start_client(self, plan: ClientPlan) -> None:
        process = self.processes[plan.source]
        if not process.alive:
            return  # the source is down: no client could connect
        self.client_serial += 1
        app = Endpoint(self.clock, f"client{plan.index}", plan.client)
        record = ClientRecord(plan, app)
        if plan.direct:
            resource = adapter.open_direct(
                process.node, plan.sink, plan.host, 80, process.params, app
            )
            record.key = (process.node_name, resource)
            process.direct.append(app)
        else:
            factory = adapter.forward_factory(
                process.node, plan.sink, plan.host, 80, process.params
            )
            here = address("10.1.0.1", 20000 + self.client_serial)
            there = address("127.0.0.1", 8080)
            client_end, relay_end = socket_pair(self.clock, here, there)
            relay = factory.buildProtocol(here)
            relay_end.protocol = relay
            process.sockets.append(relay_end)
            process.all_sockets.append(relay_end)
            relay.makeConnection(relay_end)
            key = adapter.relay_stream_key(relay)
            record.key = None if key is None else (process.node_name, key[1])
            client_end.protocol = app
            app.makeConnection(client_end)
        if record.key is not None:
            self.by_key[record.key] = record
        self.clients.append(record)
        self.all_apps.append(app)

    # -- faults --------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        kind = event.kind
        if kind == "disconnect":
            self.processes[event.node].disconnect(event.duration)
        elif kind == "broker-crash":
            for process in self.processes.values():
                if process.link is not None and process.link.index == event.index:
                    process.disconnect(self.net_rng.uniform(0.05, event.duration))
        elif kind == "restart":
            if event.detail == "with-broker":  # the broker ran in that process
                self.apply(Event(event.at, "broker-crash", index=event.index, duration=1.0))
            self.processes[event.node].crash(event.duration)
        elif kind == "forge":
            self.forge(event)
        elif kind == "replay":
            self.hub.replay()

    def forge(self, event: Event) -> None:
        names = sorted(self.processes)
        destination = names[event.index % len(names)]
        if destination == event.node:
            destination = names[(event.index + 1) % len(names)]
        seen = [r for r in self.hub.seen_streams if r[0] == event.node]
        resource = seen[event.index % len(seen)][2] if seen else f"f{event.index}-1"
        if event.detail == "open":
            resource = f"forged{event.index}-1"
        now_ms = int((EPOCH + self.clock.seconds()) * 1000)
        data = adapter.forged_frame(
            event.detail,
            CLUSTER,
            TOPIC,
            event.node,
            destination,
            resource,
            f"made{event.index:x}",
            1,
            now_ms,
            # Half the forgeries name the receiver's real incarnation, read off the broker.
            getattr(self.processes[destination].node, "incarnation", "") if event.index % 2 else "",
        )
        self.hub.inject(data, event.index % self.plan.brokers)

    # -- checks during the run -----------------------------------------------------------

    def check_bounds(self) -> None:
        # One read of a local socket, one write of a script, control messages.
        slack = READ_SIZE + 4096 + 1024
        for process in self.processes.values():
            if not process.alive:
                continue
            mine = process.params.window * process.params.growth
            for view in adapter.live_streams(process.node):
                peer = self.processes.get(view.peer)
                theirs = peer.params.window * peer.params.growth if peer is not None else mine
                limit = min(mine, theirs) + slack
                for what in ("outbox", "reorder", "pending"):
                    size = getattr(view, what)
                    if size > limit and len(self.bounds) < KEEP:
                        self.bounds.append(
                            f"t={self.clock.seconds():.2f} {process.name} stream "
                            f"{view.resource}: {what} {size} bytes > bound {limit}"
                        )
        if not self.quiet and self.clock.seconds() > self.faults_over and self.settled():
            self.quiet = True
        self.later(BOUNDS_EVERY, self.check_bounds)

    def check_buffers(self) -> None:
        """What a slow reader made pile up: at most about one window (the largest in the
        run: a receiver grants its own), never one more per reconnect."""
        window = max(p.window * p.growth for p in self.plan.params.values())
        limit = window + HIGH_WATER + READ_SIZE + 4096
        for process in self.processes.values():
            for sock in process.all_sockets:
                if sock.peak > limit and len(self.bounds) < KEEP:
                    self.bounds.append(
                        f"{process.name}: {sock.peak} bytes queued toward a slow local "
                        f"socket {sock.getPeer().host}:{sock.getPeer().port} > bound {limit}"
                    )
        for app in self.all_apps:
            if app.peak_unread > limit and len(self.bounds) < KEEP:
                self.bounds.append(
                    f"{app.label}: {app.peak_unread} bytes arrived while it did not read "
                    f"> bound {limit}"
                )

    def settled(self) -> bool:
        """Every process up and connected, every app ended, no stream left anywhere."""
        for process in self.processes.values():
            if not process.alive or process.link is None:
                return False
            if adapter.live_streams(process.node):
                return False
        return all(not app.live for app in self.all_apps)

    def live_streams(self) -> list[str]:
        out = []
        for process in self.processes.values():
            if process.alive:
                for view in adapter.live_streams(process.node):
                    out.append(f"{process.name}: {view.peer}/{view.resource} {view.phase}")
        return out

    # -- the run -------------------------------------------------------------------------

    def run(self) -> Report:
        plan = self.plan
        for process in self.processes.values():
            process.boot()
        for client in plan.clients:
            self.later(client.at, self.start_client, client)
        for event in plan.events:
            self.later(event.at, self.apply, event)
        self.later(BOUNDS_EVERY, self.check_bounds)
        end = self.faults_over + plan.quiesce_time
        clock = self.clock
        # Whoever is still down when the faults are over comes back.
        self.later(self.faults_over, self._all_back)  # relative delay
        while not self.quiet:
            calls = clock.getDelayedCalls()
            if not calls:
                break
            due = min(c.getTime() for c in calls) if len(calls) < 2 else calls[0].getTime()
            if due > end:
                break
            try:
                clock.advance(max(0.0, due - clock.seconds()))
            except Exception:
                if len(self.errors) < KEEP:
                    self.errors.append(traceback.format_exc(limit=6))
        self.check_buffers()
        apps_live = [a.label for a in self.all_apps if a.live]
        return Report(
            plan,
            clock.seconds(),
            self.quiet,
            self.clients,
            self.targets,
            self.processes,
            bounds=self.bounds,
            errors=self.errors,
            live=self.live_streams() + [f"app {label} still open" for label in apps_live],
            made_by=self.made_by,
            stats={
                "published": self.hub.published,
                "delivered": self.hub.delivered,
                "lost": self.hub.lost,
                "duplicated": self.hub.duplicated,
            },
        )

    def _all_back(self) -> None:
        for process in self.processes.values():
            if process.alive and process.link is None:
                process.connect(process.generation)
