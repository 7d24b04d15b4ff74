"""The stream registry: live streams by key, ended ids remembered up to a limit."""

from __future__ import annotations

from twisted.internet.task import Clock

from socketeer.tunnel.registry import StreamRegistry
from socketeer.tunnel.stream import Stream


class Host:
    channel_paused = True

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def seconds(self) -> float:
        return self.clock.seconds()

    def send_stream_message(self, stream, kind, seq, body=b"") -> None:
        pass

    def stream_done(self, stream) -> None:
        pass


def make(clock: Clock, peer: str, resource: str, **kw) -> Stream:
    return Stream(Host(clock), peer, resource, 1024, **kw)


def test_a_registry_is_a_mapping_by_peer_and_resource():
    clock = Clock()
    registry = StreamRegistry()
    a, b = make(clock, "si", "r1"), make(clock, "si2", "r2")
    registry.add(a)
    registry.add(b)
    assert registry[("si", "r1")] is a and registry.get(("si2", "r2")) is b
    assert registry.get(("si", "nope")) is None
    assert list(registry) == [("si", "r1"), ("si2", "r2")] and len(registry) == 2
    assert registry.by_peer() == {"si": [a], "si2": [b]}


def test_an_ended_stream_is_forgotten_and_its_id_remembered():
    clock = Clock()
    registry = StreamRegistry(remember=2)
    streams = [make(clock, "si", f"r{i}") for i in range(3)]
    for s in streams:
        registry.add(s)
    registry.ended(streams[0])
    assert ("si", "r0") not in registry and registry.recently_ended(("si", "r0"))
    registry.ended(streams[1])
    registry.ended(streams[2])
    assert not registry
    assert not registry.recently_ended(("si", "r0"))  # beyond the limit: the oldest goes
    assert registry.recently_ended(("si", "r1")) and registry.recently_ended(("si", "r2"))


def test_ending_a_stream_does_not_drop_another_with_its_key():
    clock = Clock()
    registry = StreamRegistry()
    old, new = make(clock, "si", "r1"), make(clock, "si", "r1")
    registry.add(old)
    registry.add(new)
    registry.ended(old)
    assert registry[("si", "r1")] is new


def test_stale_streams_are_a_peers_streams_of_another_incarnation():
    clock = Clock()
    registry = StreamRegistry()
    known, unknown, other = make(clock, "si", "r1"), make(clock, "si", "r2"), make(clock, "x", "r3")
    known.peer_incarnation = "p1"
    other.peer_incarnation = "p1"
    for s in (known, unknown, other):
        registry.add(s)
    assert registry.stale("si", "p2") == [known]
    assert registry.stale("si", "p1") == []


def test_states_list_streams_oldest_first():
    early, late = Clock(), Clock()
    late.advance(5)
    registry = StreamRegistry()
    registry.add(make(late, "si", "young", target="b:2"))
    registry.add(make(early, "si", "old", target="a:1", client="127.0.0.1:5"))
    first, second = registry.states()
    assert (first.id, first.target, first.client, first.phase) == (
        "old",
        "a:1",
        "127.0.0.1:5",
        "opening",
    )
    assert (second.id, second.client, second.started) == ("young", "", 5.0)
