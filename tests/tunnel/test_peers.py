"""The peer table: last heard, sessions (restarts by handshake), OPENs seen once, liveness
verdicts, round trips, and its bound."""

from __future__ import annotations

from socketeer.tunnel.peers import OPEN_WINDOW, Liveness, PeerTable, SeenCounters
from socketeer.tunnel.snapshot import PeerState


def test_no_message_is_a_restart_only_a_handshake_is():
    peers = PeerTable()
    peers.heard("si", "p1", 10.0)
    peers.heard("si", "p1", 11.0)
    peers.heard("si", "p2", 12.0)  # a late (or forged) message of another incarnation
    assert peers.incarnation("si") == "p1" and peers.silence("si", 12.0) == 0.0
    assert peers.set_session("si", "p1", 1000, 13.0, confirmed=True) == ""  # the first one
    assert peers.set_session("si", "p1", 1000, 14.0, confirmed=True) == ""  # the same one
    assert peers.set_session("si", "p2", 1000, 15.0, confirmed=True) == "p1"  # a restart
    assert peers.incarnation("si") == "p2" and peers.session("si") == "p2"
    peers.heard("si", "", 16.0)  # no incarnation told: nothing changes
    assert peers.incarnation("si") == "p2"


def test_expected_peer_has_no_incarnation_until_it_is_heard():
    peers = PeerTable()
    peers.expect("si", 5.0)
    peers.expect("si", 9.0)  # already known: its silence still counts from 5
    assert peers.silence("si", 10.0) == 5.0
    assert peers.incarnation("si") == "" and peers.session("si") == ""
    peers.heard("si", "p1", 10.0)
    assert peers.silence("si", 10.0) == 0.0 and peers.incarnation("si") == "p1"
    assert peers.session("si") == ""  # heard is not a session: that takes a handshake


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


def test_a_session_holds_the_peers_window_and_is_confirmed_by_an_answered_hello():
    peers = PeerTable()
    assert peers.window("si") == 0 and not peers.confirmed("si")
    peers.set_session("si", "p1", 4096, 1.0, confirmed=False)  # the peer greeted us
    assert peers.session("si") == "p1" and peers.window("si") == 4096
    assert not peers.confirmed("si")
    peers.set_session("si", "p1", 4096, 2.0, confirmed=True)  # it answered our HELLO
    assert peers.confirmed("si")
    peers.unconfirm_all()  # our channel went down: confirm it again
    assert not peers.confirmed("si") and peers.session("si") == "p1"
    peers.end_session("si")  # it told us it has no session with us
    assert peers.session("si") == "" and peers.window("si") == 0
    assert not peers.confirmed("si")


def test_hellos_to_one_peer_are_rate_limited_until_the_channel_comes_back():
    peers = PeerTable()
    assert peers.hello_due("si", 10.0, 1.0)
    assert not peers.hello_due("si", 10.5, 1.0)
    assert peers.hello_due("si", 11.0, 1.0)
    peers.unconfirm_all()  # a new channel: greet at once
    assert peers.hello_due("si", 11.1, 1.0)


def test_an_open_counter_is_first_once_per_session():
    peers = PeerTable()
    assert not peers.first_open("si", 1)  # no session: never run
    peers.set_session("si", "p1", 1000, 1.0, confirmed=True)
    assert peers.first_open("si", 1)
    assert not peers.first_open("si", 1)
    assert peers.first_open("si", 3) and peers.first_open("si", 2)  # out of order is fine
    assert not peers.first_open("si", 2)
    peers.set_session("si", "p1", 1000, 2.0, confirmed=True)  # the same session goes on
    assert not peers.first_open("si", 3)
    peers.set_session("si", "p2", 1000, 3.0, confirmed=True)  # a new incarnation: new counters
    assert peers.first_open("si", 1)
    peers.end_session("si")
    assert not peers.first_open("si", 2)


def test_seen_counters_slide_and_refuse_what_is_too_old_to_tell():
    seen = SeenCounters(size=8)
    assert seen.first(1) and seen.first(5)
    assert not seen.first(5) and not seen.first(1)
    assert seen.first(4)
    assert seen.first(12)  # 12 - 8 = 4: counters up to 4 are now too old to tell
    assert not seen.first(4) and not seen.first(3)
    assert seen.first(8)  # still inside the window, never seen
    assert not seen.first(8)
    assert seen.first(12 + 100)  # a jump past the whole window forgets all of it
    assert not seen.first(112) and not seen.first(104) and seen.first(105)
    assert SeenCounters().size == OPEN_WINDOW


def test_the_table_is_bounded_and_keeps_busy_peers():
    busy = {"b"}
    peers = PeerTable(max_peers=3, busy=lambda name: name in busy)
    peers.heard("b", "b1", 1.0)  # the oldest, but it carries streams
    peers.heard("x", "x1", 2.0)
    peers.heard("y", "y1", 3.0)
    peers.heard("z", "z1", 4.0)  # one too many: the quietest idle peer goes
    assert sorted(peers) == ["b", "y", "z"]
    peers.heard("y", "y1", 5.0)  # heard again: now the most recent
    peers.heard("w", "w1", 6.0)
    assert sorted(peers) == ["b", "w", "y"]


def test_idle_peers_without_streams_are_forgotten():
    busy = {"b"}
    peers = PeerTable(busy=lambda name: name in busy)
    peers.heard("b", "b1", 0.0)
    peers.heard("x", "x1", 0.0)
    peers.heard("y", "y1", 50.0)
    peers.forget_idle(100.0, 60.0)
    assert sorted(peers) == ["b", "y"]
