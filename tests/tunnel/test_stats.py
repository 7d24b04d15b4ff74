"""Node counters and their snapshot: typed totals, counts by label, the names status shows."""

from __future__ import annotations

import dataclasses

import pytest

from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.stats import TOTALS, Counts, NodeStats


def test_snapshot_is_a_detached_immutable_copy():
    stats = NodeStats()
    stats.streams_closed += 2
    stats.denied["blacklist b"] += 1
    stats.open_failed[OpenFailure.REFUSED] += 3
    counts = stats.snapshot()
    stats.streams_closed += 1
    stats.denied["blacklist b"] += 1
    assert counts.streams_closed == 2 and counts.denied == {"blacklist b": 1}
    assert counts.open_failed == {OpenFailure.REFUSED: 3}
    with pytest.raises(dataclasses.FrozenInstanceError):
        counts.streams_closed = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        counts.denied["x"] = 1  # type: ignore[index]


def test_counts_has_every_total_of_node_stats():
    labelled = {"denied", "open_failed", "seal_refused"}
    assert {f.name for f in dataclasses.fields(Counts)} == set(TOTALS) | labelled
    assert {f.name for f in dataclasses.fields(NodeStats)} == set(TOTALS) | labelled


def test_dropped_groups_every_reason_a_message_was_dropped():
    stats = NodeStats(malformed=1, foreign=2, unknown_stream=0, dropped_unconnected=4)
    stats.seal_refused["auth"] += 5
    stats.pongs = 7
    assert stats.snapshot().dropped == {
        "malformed": 1,
        "foreign": 2,
        "dropped-unconnected": 4,
        "seal-auth": 5,
    }


def test_events_are_the_counters_without_a_metric_of_their_own():
    assert NodeStats().snapshot().events == {}
    counts = NodeStats(pongs=3, open_refused=1, streams_closed=9).snapshot()
    assert counts.events == {"open-refused": 1, "pongs": 3}


def test_by_name_uses_the_flat_names_operators_know():
    stats = NodeStats(streams_opened=1, bytes_out=10, messages_in=4)
    stats.denied["whitelist"] += 2
    stats.open_failed[OpenFailure.NAME_NOT_FOUND] += 1
    stats.seal_refused["replay"] += 3
    assert stats.snapshot().by_name() == {
        "bytes-out": 10,
        "denied:whitelist": 2,
        "messages-in": 4,
        "open-failed:name-not-found": 1,
        "seal-replay": 3,
        "streams-opened": 1,
    }
