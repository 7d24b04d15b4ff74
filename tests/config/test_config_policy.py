"""Policy profiles in the properties file: access lists, whitelists, blacklists, maplists."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketeer.config.load import parse_config
from socketeer.config.model import ConfigError
from socketeer.policy import EMPTY_POLICY, HostKind, PortRange

PATH = "policy.properties"
ETC = Path(__file__).resolve().parents[2] / "etc"

# A broker, sink 0 "si" and source 1 "so" (a fixed forward), as in test_config.py.
BASE = """\
socketeer.general.messagingserverenabled=true
socketeer.sourcesink.0.clustername=c
socketeer.sourcesink.0.nodename=si
socketeer.sourcesink.0.channel=stomp://127.0.0.1:61626/sisotopic
socketeer.sourcesink.0.isSpawningAndResolvingSink=true
socketeer.sourcesink.1.clustername=c
socketeer.sourcesink.1.nodename=so
socketeer.sourcesink.1.channel=stomp://127.0.0.1:61626/sisotopic
socketeer.sourcesink.1.serverport=1234
socketeer.sourcesink.1.peernode=si
socketeer.sourcesink.1.fixedHost=localhost
socketeer.sourcesink.1.fixedPort=80
"""
BASE_LINES = BASE.count("\n")

# The original Socketeer's keys, verbatim.
ORIGINAL_KEYS = """\
socketeer.sourcesink.1.accesslist=0
socketeer.accesslist.0.host=127.0.0.1
socketeer.sourcesink.1.blacklist=0
socketeer.blacklist.0.cluster=c
socketeer.blacklist.0.node=si
socketeer.blacklist.0.host=localhost
socketeer.blacklist.0.port=80
socketeer.sourcesink.1.whitelist=0
socketeer.whitelist.0.cluster=c
socketeer.whitelist.0.node=si
socketeer.whitelist.0.host=localhost
socketeer.whitelist.0.port=80
socketeer.sourcesink.1.maplist=0
socketeer.maplist.0.orghost=localhost
socketeer.maplist.0.orgport=80
socketeer.maplist.0.maphost=localhost
socketeer.maplist.0.mapport=90
"""


def parse(extra: str):
    return parse_config(BASE + extra, PATH)


def error(extra: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(extra)
    return info.value


def test_no_lists_means_the_empty_policy() -> None:
    config = parse("")
    assert all(ss.policy is EMPTY_POLICY for ss in config.sourcesinks)


def test_original_keys() -> None:
    config = parse(ORIGINAL_KEYS)
    assert config.warnings == ()
    sink, source = config.sourcesinks
    assert sink.policy is EMPTY_POLICY
    policy = source.policy
    (access,) = policy.accesslist
    assert access.id == "accesslist.0"
    assert access.hosts[0].network == IPv4Network("127.0.0.1/32")
    (black,) = policy.blacklist
    assert (black.clusters, black.nodes, black.ports) == (("c",), ("si",), (PortRange(80, 80),))
    assert black.hosts[0].kind is HostKind.LOCAL
    assert black.describe() == "blacklist.0 (cluster=c node=si host=localhost port=80)"
    (mapping,) = policy.maplist
    assert (mapping.maphost, mapping.mapport) == ("localhost", 90)
    # maplist first: localhost:80 becomes localhost:90, which the whitelist (port 80) lacks
    decision = policy.evaluate("localhost", 80, cluster="c", node="si")
    assert not decision.allowed and decision.rule == "whitelist"
    assert (decision.target_host, decision.target_port) == ("localhost", 90)


def test_entries_lists_and_several_profiles() -> None:
    config = parse(
        "socketeer.sourcesink.0.blacklist=lan, loop,lan\n"
        "socketeer.blacklist.lan.host=10.0.0.0/8, 192.168.0.0/16\n"
        "socketeer.blacklist.loop.ssh.host=localhost\n"
        "socketeer.blacklist.loop.ssh.port=22\n"
        "socketeer.blacklist.loop.db.host=localhost\n"
        "socketeer.blacklist.loop.db.port=3306, 5432, 6000-6010\n"
        "socketeer.blacklist.loop.db.node=*\n"
        "socketeer.blacklist.loop.ssh.cluster=c, d\n"
    )
    assert config.warnings == ()
    rules = config.sourcesinks[0].policy.blacklist
    assert [r.id for r in rules] == ["blacklist.lan", "blacklist.loop.ssh", "blacklist.loop.db"]
    assert [p.text for p in rules[0].hosts] == ["10.0.0.0/8", "192.168.0.0/16"]
    assert rules[1].clusters == ("c", "d")
    assert rules[2].nodes == ()  # * is any
    assert rules[2].ports == (PortRange(3306, 3306), PortRange(5432, 5432), PortRange(6000, 6010))
    policy = config.sourcesinks[0].policy
    assert policy.evaluate("127.1", 6005, cluster="c", node="so").rule == "blacklist.loop.db"
    assert policy.evaluate("127.1", 22, cluster="x", node="so").allowed
    assert not policy.evaluate("0x0a000001", 1).allowed


def test_profile_names_may_be_url_encoded() -> None:
    config = parse(
        "socketeer.sourcesink.1.blacklist=web%2eexample\n"
        "socketeer.blacklist.web%2Eexample.host=*.example.com\n"
    )
    assert config.warnings == ()
    assert config.sourcesinks[1].policy.blacklist[0].id == "blacklist.web%2Eexample"


def test_sinks_carry_lists_too() -> None:
    config = parse(
        "socketeer.sourcesink.0.whitelist=db\n"
        "socketeer.whitelist.db.node=so\n"
        "socketeer.whitelist.db.host=10.0.0.5\n"
        "socketeer.whitelist.db.port=3306\n"
        "socketeer.sourcesink.0.maplist=db\n"
        "socketeer.maplist.db.orghost=db\n"
        "socketeer.maplist.db.maphost=10.0.0.5\n"
    )
    policy = config.sourcesinks[0].policy
    assert policy.evaluate("db", 3306, cluster="c", node="so").allowed
    assert not policy.evaluate("db", 3306, cluster="c", node="other").allowed


def test_maplist_may_rewrite_only_the_port() -> None:
    config = parse(
        "socketeer.sourcesink.1.maplist=m\n"
        "socketeer.maplist.m.orgport=80\n"
        "socketeer.maplist.m.mapport=8080\n"
    )
    (rule,) = config.sourcesinks[1].policy.maplist
    assert (rule.maphost, rule.mapport, rule.orghosts) == (None, 8080, ())


def line(extra: str, key: str) -> int:
    for number, text in enumerate((BASE + extra).splitlines(), 1):
        if text.startswith(key + "="):
            return number
    raise AssertionError(key)


# (extra lines, the key the error is about, fragments of the message)
ERRORS = [
    (
        "socketeer.sourcesink.1.blacklist=0\nsocketeer.blacklist.0.host=10.0.0.0/33\n",
        "socketeer.blacklist.0.host",
        ["invalid host '10.0.0.0/33'", "allowed: an IP address", "CIDR range", "*.domain"],
    ),
    (
        "socketeer.sourcesink.1.blacklist=0\nsocketeer.blacklist.0.host=a.*.example\n",
        "socketeer.blacklist.0.host",
        ["invalid host 'a.*.example': a wildcard is only allowed as a whole first label"],
    ),
    (
        "socketeer.sourcesink.1.blacklist=0\nsocketeer.blacklist.0.host=a,,b\n",
        "socketeer.blacklist.0.host",
        ["empty item in 'a,,b'"],
    ),
    (
        "socketeer.sourcesink.1.whitelist=0\nsocketeer.whitelist.0.port=90-80\n",
        "socketeer.whitelist.0.port",
        ["invalid port '90-80'", "allowed: a port 1..65535, a range such as 8000-8999"],
    ),
    (
        "socketeer.sourcesink.1.whitelist=0\nsocketeer.whitelist.0.node=s.i\n",
        "socketeer.whitelist.0.node",
        ["invalid name 's.i'", "no '.'"],
    ),
    (
        "socketeer.sourcesink.1.maplist=0\nsocketeer.maplist.0.orghost=a\n",
        "socketeer.maplist.0.orghost",
        ["maplist entry '0' says where from but not where to", "maphost and/or .mapport"],
    ),
    (
        "socketeer.sourcesink.1.maplist=0\nsocketeer.maplist.0.maphost=*.example\n",
        "socketeer.maplist.0.maphost",
        ["invalid maphost", "allowed: one host name or IP address"],
    ),
    (
        "socketeer.sourcesink.1.maplist=0\nsocketeer.maplist.0.mapport=0\n",
        "socketeer.maplist.0.mapport",
        ["invalid mapport", "allowed: one port 1..65535"],
    ),
    (
        "socketeer.sourcesink.1.blacklist=0, nope\nsocketeer.blacklist.0.host=a\n",
        "socketeer.sourcesink.1.blacklist",
        ["no blacklist profile 'nope'", "define socketeer.blacklist.nope.<cluster|node|host|port>"],
    ),
    (
        "socketeer.sourcesink.1.accesslist=*\n",
        "socketeer.sourcesink.1.accesslist",
        ["invalid profile name '*'"],
    ),
    (
        "socketeer.sourcesink.1.blacklist=\n",
        "socketeer.sourcesink.1.blacklist",
        ["empty item in ''"],
    ),
    (
        "socketeer.sourcesink.1.blacklist=x\nsocketeer.blacklist.x%zz.host=a\n",
        "socketeer.blacklist.x%zz.host",
        ["invalid blacklist profile name 'x%zz'", "%XX escapes"],
    ),
    (
        "socketeer.blacklist.x.a+b.host=a\n",
        "socketeer.blacklist.x.a+b.host",
        ["invalid blacklist entry name 'a+b'"],
    ),
    (
        # an error in a profile nobody uses is still an error
        "socketeer.accesslist.spare.host=somewhere.example\n",
        "socketeer.accesslist.spare.host",
        ["invalid host 'somewhere.example': a client is known by its address", "CIDR"],
    ),
]


@pytest.mark.parametrize(("extra", "key", "fragments"), ERRORS)
def test_errors_name_key_file_line_and_what_is_allowed(extra, key, fragments) -> None:
    e = error(extra)
    assert str(e).startswith(f"{PATH}:{line(extra, key)}: {key}: ")
    for fragment in fragments:
        assert fragment in str(e)


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("socketeer.accesslist.0.hots", "socketeer.accesslist.0.host"),
        ("socketeer.blacklists.0.host", "socketeer.blacklist.0.host"),
        ("socketeer.whitelist.0.1.prot", "socketeer.whitelist.0.1.port"),
        ("socketeer.maplist.0.orighost", "socketeer.maplist.0.orghost"),
        ("socketeer.maplist.0.MapPort", "socketeer.maplist.0.mapport"),
        ("socketeer.blacklist.0", "socketeer.blacklist.0.<cluster|node|host|port>"),
        ("socketeer.blacklist.0.1.2.host", "socketeer.blacklist.0.1.host"),
        ("socketeer.sourcesink.1.backlist", "socketeer.sourcesink.1.blacklist"),
        ("socketeer.sourcesink.1.maplists", "socketeer.sourcesink.1.maplist"),
    ],
)
def test_unknown_policy_keys_warn_with_a_suggestion(key: str, suggestion: str) -> None:
    config = parse(f"{key}=1\n")
    assert config.warnings == (
        f"{PATH}:{BASE_LINES + 1}: unknown key {key}; did you mean {suggestion}?",
    )


def test_unused_profile_warns() -> None:
    config = parse("socketeer.blacklist.old.host=10.0.0.1\nsocketeer.blacklist.old.port=22\n")
    assert config.warnings == (
        f"{PATH}:{BASE_LINES + 1}: blacklist profile old is not used by any sourcesink "
        "(reference it with socketeer.sourcesink.<id>.blacklist=old)",
    )


def test_accesslist_on_a_sink_is_ignored_with_a_warning() -> None:
    config = parse("socketeer.sourcesink.0.accesslist=a\nsocketeer.accesslist.a.host=::1\n")
    assert config.sourcesinks[0].policy is EMPTY_POLICY
    assert config.warnings == (
        f"{PATH}:{BASE_LINES + 1}: socketeer.sourcesink.0.accesslist is ignored: an access list "
        "admits the clients of a source, and this sourcesink has no serverport",
    )


def test_the_sample_configuration_policy_section_parses() -> None:
    # Uncomment etc/socketeer.properties's policy examples: they must be valid as written.
    text = (ETC / "socketeer.properties").read_text(encoding="utf-8")
    head, marker, section = text.partition("# Policy: access lists")
    assert marker
    lines = [ln[1:] if ln.startswith("#socketeer.") else ln for ln in section.splitlines()]
    config = parse_config(head + marker + "\n".join(lines) + "\n", "socketeer.properties")
    assert config.warnings == ()
    nodes = {ss.nodename: ss.policy for ss in config.sourcesinks}
    px, si = nodes["px"], nodes["si"]
    assert [r.id for r in px.blacklist] == [
        "blacklist.internal.1",
        "blacklist.internal.2",
        "blacklist.internal.3",
    ]
    assert si.blacklist == px.blacklist
    assert nodes["so"] is EMPTY_POLICY
    assert px.admit("::1").allowed and not px.admit("192.0.2.1").allowed
    decision = px.evaluate("localhost", 80, cluster="c", node="si")
    assert decision.allowed and (decision.target_host, decision.target_port) == ("localhost", 8000)
    assert px.evaluate("localhost", 3306, cluster="c", node="si").rule == "whitelist"
    assert px.evaluate("localhost", 8022, cluster="c", node="si").allowed
    assert px.evaluate("10.1.1.1", 443, cluster="c", node="si").rule == "blacklist.internal.1"
    assert px.evaluate("x.corp.example.com", 443, cluster="c", node="si").rule == (
        "blacklist.internal.3"
    )


_fragments = st.sampled_from(
    [
        "socketeer.sourcesink.1.blacklist=",
        "socketeer.sourcesink.1.maplist=",
        "socketeer.sourcesink.0.whitelist=",
        "socketeer.sourcesink.1.accesslist=",
        "socketeer.blacklist.",
        "socketeer.maplist.",
        "socketeer.whitelist.",
        "socketeer.accesslist.",
        "0",
        "1",
        ".",
        ".host=",
        ".port=",
        ".node=",
        ".orghost=",
        ".maphost=",
        ".mapport=",
        "*",
        "*.",
        ",",
        " ",
        "/",
        "-",
        ":",
        "::1",
        "[",
        "]",
        "%2E",
        "%",
        "127.1",
        "0x7f",
        "localhost",
        "\u00fc",
        "\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_fragments, max_size=30).map("".join))
def test_policy_keys_raise_only_config_error(extra: str) -> None:
    try:
        parse(extra + "\n")
    except ConfigError as e:
        assert str(e).startswith(PATH)


def test_the_readme_example_parses() -> None:
    readme = (ETC.parent / "README.rst").read_text(encoding="utf-8")
    section = readme[readme.index("\nPolicy\n======\n") :]
    example = section[
        section.index("::\n\n") + 4 : section.index("\n\n", section.index("::\n\n") + 4)
    ]
    lines = [ln.strip() for ln in example.splitlines()]
    assert all(ln.startswith("socketeer.") for ln in lines)
    config = parse("\n".join(lines) + "\n")
    assert config.warnings == ()
    policy = config.sourcesinks[1].policy
    assert [r.id for r in policy.blacklist] == [
        "blacklist.0",
        "blacklist.internal.lan",
        "blacklist.internal.ssh",
    ]
    assert policy.evaluate("git.corp.example.com", 2222).rule == "blacklist.internal.ssh"
    assert policy.evaluate("git.corp.example.com", 443).allowed
