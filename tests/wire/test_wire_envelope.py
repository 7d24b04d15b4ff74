"""The envelope codec: what goes out as SEND comes back as the same Envelope."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stompest.protocol import StompFrame

from socketeer.wire.envelope import (
    BROADCAST,
    Envelope,
    EnvelopeError,
    MsgType,
    Route,
    VersionError,
    cluster_destination,
    decode_params,
    encode_params,
    encode_send,
    from_frame,
    is_name,
    is_resource,
    message_type,
    node_destination,
    read_route,
)
from socketeer.wire.stompframing import StompFrameParser

names = st.from_regex(r"[A-Za-z0-9_\-]{1,12}", fullmatch=True)


@given(
    kind=st.sampled_from(list(MsgType)),
    cluster=names,
    source=names,
    dest=names | st.just("*"),
    resource=names | st.just(""),
    seq=st.integers(0, 2**63),
    ts=st.integers(0, 2**50),
    body=st.binary(max_size=300),
    pinc=names | st.just(""),
)
def test_round_trip(kind, cluster, source, dest, resource, seq, ts, body, pinc):
    env = Envelope(kind, cluster, source, dest, resource, seq, ts, "abc123", body, pinc)
    frames = StompFrameParser("1.2").feed(encode_send("topic", env))
    assert len(frames) == 1
    frame = frames[0]
    assert frame.command == "SEND"
    assert frame.headers["sk-v"] == "2" and frame.headers["sk-pinc"] == pinc
    expected = (
        cluster_destination("topic", cluster)
        if dest == "*"
        else node_destination("topic", cluster, dest)
    )
    assert frame.headers["destination"] == expected
    assert from_frame(frame) == env


def test_params_round_trip():
    params = {"host": "exämple.org", "port": "80", "message": "a=b&c d"}
    assert decode_params(encode_params(params)) == params


@pytest.mark.parametrize(
    "headers, problem",
    [
        ({}, "missing header sk-type"),
        ({"sk-type": "bogus"}, "unknown message type"),
        ({"sk-type": "data", "sk-cluster": "c"}, "missing header"),
        (
            {
                "sk-type": "data",
                "sk-cluster": "c.x",
                "sk-src": "a",
                "sk-dst": "b",
                "sk-seq": "1",
                "sk-ts": "1",
            },
            "invalid cluster",
        ),
        (
            {
                "sk-type": "data",
                "sk-cluster": "c",
                "sk-src": "a",
                "sk-dst": "b",
                "sk-seq": "x",
                "sk-ts": "1",
            },
            "not an integer",
        ),
        (
            {
                "sk-type": "data",
                "sk-cluster": "c",
                "sk-src": "a",
                "sk-dst": "b",
                "sk-seq": "-1",
                "sk-ts": "1",
            },
            "negative",
        ),
    ],
)
def test_malformed_frames_are_rejected(headers, problem):
    with pytest.raises(EnvelopeError, match=problem):
        from_frame(StompFrame("MESSAGE", headers={"sk-v": "2", **headers}))


GOOD = {
    "sk-type": "ping",
    "sk-cluster": "c",
    "sk-src": "a",
    "sk-dst": "b",
    "sk-seq": "0",
    "sk-ts": "0",
    "sk-v": "2",
}


def test_a_frame_of_another_wire_version_is_refused_naming_its_sender():
    assert from_frame(StompFrame("MESSAGE", headers=GOOD)).type is MsgType.PING
    v1 = {k: v for k, v in GOOD.items() if k != "sk-v"}
    with pytest.raises(VersionError, match=r"wire version 1 \(no sk-v header\) from node 'a'"):
        from_frame(StompFrame("MESSAGE", headers=v1))
    with pytest.raises(VersionError, match="wire version '3'.* speaks version 2"):
        from_frame(StompFrame("MESSAGE", headers={**GOOD, "sk-v": "3"}))


@pytest.mark.parametrize("header", ["sk-inc", "sk-pinc"])
def test_an_invalid_incarnation_is_refused(header: str):
    with pytest.raises(EnvelopeError, match="invalid incarnation"):
        from_frame(StompFrame("MESSAGE", headers={**GOOD, header: "a b"}))


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "sk-type",
                "sk-cluster",
                "sk-src",
                "sk-dst",
                "sk-res",
                "sk-seq",
                "sk-ts",
                "sk-inc",
                "sk-pinc",
            ]
        ),
        st.text(max_size=10),
    ),
    st.binary(max_size=20),
)
def test_arbitrary_headers_never_crash(headers, body):
    try:
        from_frame(StompFrame("MESSAGE", headers={"sk-v": "2", **headers}, body=body))
    except EnvelopeError:
        pass


def test_bad_params_body():
    with pytest.raises(EnvelopeError):
        decode_params(b"\xff\xfe")


def test_name_and_resource_rules():
    assert is_name("node-1_a%2F") and not is_name("") and not is_name("a.b")
    assert not is_name("a:b") and not is_name("a\n")
    assert is_resource("") and is_resource("ab12-3") and not is_resource("a b")
    assert not is_name(BROADCAST)


def test_message_type_names_every_type_and_nothing_else():
    assert [message_type(t.value) for t in MsgType] == list(MsgType)
    with pytest.raises(EnvelopeError, match="unknown message type 'bogus'"):
        message_type("bogus")


@pytest.mark.parametrize(
    "headers, problem",
    [
        ({"sk-cluster": "c", "sk-src": "a"}, "missing header sk-dst"),
        ({"sk-cluster": "c", "sk-src": "a.b", "sk-dst": "b"}, "invalid cluster or source"),
        ({"sk-cluster": "c", "sk-src": "a", "sk-dst": "b:c"}, "invalid destination"),
    ],
)
def test_read_route_rejects_what_cannot_be_routed(headers, problem):
    with pytest.raises(EnvelopeError, match=problem):
        read_route(headers)


def test_read_route_accepts_a_broadcast():
    headers = {"sk-cluster": "c", "sk-src": "a", "sk-dst": BROADCAST, "sk-res": "ignored"}
    assert read_route(headers) == Route("c", "a", BROADCAST)
