"""The benchmark harness (bench/) imports, and its pure helpers work on tiny inputs.

The benchmark itself is not part of the test suite (``python -m bench``, README.rst); this
only keeps its checksum, statistics, profile and report code from rotting. No processes,
no sockets.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import client, common, hol, logins, peers, profile, report, run, target  # noqa: E402


def test_modules_import() -> None:
    assert callable(run.main) and callable(client.main) and callable(target.main)
    assert peers.Ssh(peers.GCM).name == run.REFERENCE
    assert logins.summary([0.001, 0.003, 0.002])["median_ms"] == 2.0


def test_pattern_wraps_and_checksums() -> None:
    pat = common.Pattern(seed=1, length=101)
    naive = bytes(pat.chunk(0, 101)) * 5
    assert bytes(pat.chunk(95, 20)) == naive[95:115]
    pieces = list(pat.chunks(7, 250, size=64))
    assert [len(p) for p in pieces] == [64, 64, 64, 58]
    assert b"".join(pieces) == naive[7:257]
    assert pat.checksum(7, 250) == (250, zlib.crc32(naive[7:257]))
    with pytest.raises(ValueError):
        pat.chunk(0, 102)


def test_checksum_round_trip() -> None:
    check = common.Checksum()
    check.update(b"hello ")
    check.update(memoryview(b"world"))
    assert check.value == (11, zlib.crc32(b"hello world"))
    text = common.format_checksum(check.value)
    assert common.parse_checksum(text) == check.value


def test_percentiles_and_summaries() -> None:
    values = list(range(1, 101))
    assert common.percentile(values, 50) == pytest.approx(50.5)
    assert common.percentile(values, 99) == pytest.approx(99.01)
    assert common.percentile([3.0], 99) == 3.0
    assert common.percentile([5, 1, 3], 0) == 1 and common.percentile([5, 1, 3], 100) == 5
    with pytest.raises(ValueError):
        common.percentile([], 50)
    summary = common.latency_summary([1_000_000, 2_000_000, 3_000_000])
    assert summary["p50_ms"] == pytest.approx(2.0) and summary["n"] == 3
    assert common.median([3, None, 1, 2]) == 2 and common.median([None]) is None
    assert common.ratio(3, 2) == 1.5 and common.ratio(None, 2) is None
    assert common.ratio(1, 0) is None
    assert common.meets(1.2, "<=", 1.5) and not common.meets(0.9, ">=", 1.0)
    assert common.meets(None, ">=", 1.0) is None
    assert common.fmt_num(1234.5) == "1234" or common.fmt_num(1234.5) == "1235"
    assert common.fmt_num(0.012345) == "0.0123" and common.fmt_num(None) == "-"
    assert common.mib_per_s(common.MiB * 10, 2.0) == 5.0


def test_profile_summary() -> None:
    base = "thread (1): MainThread;run (/x/site-packages/twisted/internet/base.py:1);"
    lines = [
        base + "dataReceived (/w/code/socketeer/channel.py:10);"
        "feed (/w/code/socketeer/wire/stompframing.py:5) 30",
        base + "doRead (/x/site-packages/twisted/internet/tcp.py:2) 10",
        base + "EPollReactor.doPoll (/x/site-packages/twisted/internet/epollreactor.py:3) 40",
        "thread (2): worker;Condition.wait (/usr/lib/python3.11/threading.py:4) 99",
        "",
    ]
    s = profile.summarize(profile.parse_collapsed(lines))
    assert s["samples"] == 40 and s["busy"] == 0.5
    assert s["self"][0] == ("socketeer/wire/stompframing.py:feed", 0.75)
    assert dict(s["packages"]) == {"socketeer": 0.75, "twisted": 0.25}
    assert ("socketeer/channel.py:dataReceived", 0.75) in s["inclusive"]
    assert dict(s["areas"]) == {"STOMP framing (wire/stompframing.py)": 0.75}
    assert profile.short_file("/usr/lib/python3.11/asyncio/events.py") == "asyncio/events.py"


def _trial(peer: str, scenario: str, rnd: int, **fields) -> dict:
    return {"peer": peer, "scenario": scenario, "round": rnd, **fields}


def test_report_renders_targets() -> None:
    mem = {"rss_mib": 10.0, "pss_mib": 8.0, "hwm_mib": 12.0}
    trials = []
    for rnd, (ssh_up, sk_up) in enumerate([(100.0, 50.0), (120.0, 70.0), (110.0, 60.0)]):
        trials += [
            _trial("ssh-gcm", "bulk_up", rnd, mibps=ssh_up),
            _trial("socketeer-3p-key", "bulk_up", rnd, mibps=sk_up),
            _trial("ssh-gcm", "idle", rnd, ok=True, open_s=1.0, held={"mem": mem}, mem_before=mem),
            _trial(
                "socketeer-3p-key",
                "many",
                rnd,
                ok=rnd != 2,
                verified=10,
                streams=10,
                open_s=1.0,
                verify_s=0.1,
                held={"mem": mem},
            ),
        ]
    trials.append(_trial("socketeer-3p-key", "bulk_down", 0, error="timed out after 1s"))
    results = {
        "meta": {
            "reference": "ssh-gcm",
            "main_peer": "socketeer-3p-key",
            "peers": {"ssh-gcm": "ssh -D (aes128-gcm)", "socketeer-3p-key": "Socketeer"},
            "sizes": dict(run.QUICK),
            "machine": {"date": "2026-01-01T00:00:00+00:00"},
            "code": {"source": "tree", "head": "abc1234"},
            "notes": {},
        },
        "trials": trials,
        "profile": None,
    }
    agg = report.aggregate(results)
    assert agg["socketeer-3p-key"]["bulk_up"]["median"] == 60.0
    assert agg["socketeer-3p-key"]["bulk_up"]["ratio"] == pytest.approx(60 / 110)
    rows = {t["target"]: t for t in report.targets(results, agg)}
    assert rows["bulk upload >= 1.0x ssh -D"]["met"] is False
    assert rows["bulk download >= 1.0x ssh -D"]["met"] is None
    assert rows["1,000 concurrent streams held without error"]["met"] is False
    text = report.render(results)
    assert "**missed**" in text and "timed out after 1s" in text


def test_hol_summary() -> None:
    assert hol.summary([]) == {"n": 0}
    rtts = [0.002] * 98 + [1.5, 3.0]
    figures = hol.summary(rtts)
    assert figures["n"] == 100 and figures["p50_ms"] == 2.0
    assert figures["max_ms"] == 3000.0 and figures["over_1s"] == 2
    assert figures["p99_ms"] == pytest.approx(1515.0)
    assert callable(hol.main)
