"""The peer table: last heard, restarts by incarnation, liveness verdicts, round trips."""

from __future__ import annotations

from socketeer.tunnel.peers import Liveness, PeerTable
from socketeer.tunnel.snapshot import PeerState


def test_first_message_is_no_restart_and_a_new_incarnation_is():
    peers = PeerTable()
    assert peers.heard("si", "p1", 10.0) is False
    assert peers.heard("si", "p1", 11.0) is False
    assert peers.heard("si", "p2", 12.0) is True
    assert peers.incarnation("si") == "p2"
    assert peers.heard("si", "", 13.0) is False  # no incarnation told: nothing to compare


def test_expected_peer_has_no_incarnation_so_its_first_message_is_no_restart():
    peers = PeerTable()
    peers.expect("si", 5.0)
    peers.expect("si", 9.0)  # already known: its silence still counts from 5
    assert peers.silence("si", 10.0) == 5.0
    assert peers.heard("si", "p1", 10.0) is False
    assert peers.silence("si", 10.0) == 0.0


def test_liveness_pings_a_quiet_peer_and_gives_up_on_a_silent_one():
    peers = PeerTable(grace=20.0, ping_interval=5.0)
    peers.heard("si", "p1", 100.0)
    assert peers.liveness("si", 104.9) is Liveness.ALIVE
    assert peers.liveness("si", 105.0) is Liveness.PING
    assert peers.liveness("si", 120.0) is Liveness.PING
    assert peers.liveness("si", 120.1) is Liveness.GONE
    assert peers.liveness("never-met", 1000.0) is Liveness.ALIVE


def test_pong_records_a_plausible_round_trip_only():
    peers = PeerTable()
    peers.heard("si", "p1", 100.0)
    assert peers.rtt("si") is None
    peers.pong("si", 99.75, 100.0)
    assert peers.rtt("si") == 0.25
    peers.pong("si", 101.0, 100.0)  # from the future: not our ping
    peers.pong("si", 0.0, 100_000.0)  # an hour or more: not our ping
    assert peers.rtt("si") == 0.25
    peers.pong("stranger", 99.0, 100.0)  # never heard: ignored
    assert "stranger" not in peers and peers.rtt("stranger") is None


def test_states_are_sorted_immutable_copies():
    peers = PeerTable()
    peers.heard("zz", "z1", 1.0)
    peers.heard("aa", "a1", 2.0)
    peers.pong("aa", 1.5, 2.0)
    states = peers.states()
    assert states == (PeerState("aa", "a1", 2.0, 2.0, 0.5), PeerState("zz", "z1", 1.0, None, None))
    peers.heard("aa", "a2", 3.0)
    assert states[0].incarnation == "a1"
    assert list(peers) == ["zz", "aa"] and len(peers) == 2
