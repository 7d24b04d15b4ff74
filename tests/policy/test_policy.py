"""socketeer.policy: canonical hosts, patterns and evaluation order; pure, no reactor."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from socketeer.policy import (
    Decision,
    HostKind,
    MapRule,
    Policy,
    PolicyRef,
    Rule,
    canonical_host,
    client_host,
    is_local_address,
    parse_host_pattern,
    parse_map_host,
    parse_port_range,
)

LOOPBACK = IPv4Address("127.0.0.1")


def rule(kind: str = "blacklist", name: str = "0", *, host="", port="", cluster="", node=""):
    """A Rule from config-like text (comma-separated values)."""

    def items(text: str) -> list[str]:
        return [t.strip() for t in text.split(",")] if text else []

    return Rule(
        kind,
        name,
        hosts=tuple(parse_host_pattern(h) for h in items(host)),
        ports=tuple(parse_port_range(p) for p in items(port)),
        clusters=tuple(items(cluster)),
        nodes=tuple(items(node)),
    )


def maprule(name="0", *, orghost="", orgport="", maphost=None, mapport=None, node=""):
    return MapRule(
        name,
        maphost=parse_map_host(maphost) if maphost else None,
        mapport=mapport,
        orghosts=tuple(parse_host_pattern(h) for h in orghost.split(",") if h),
        orgports=tuple(parse_port_range(p) for p in orgport.split(",") if p),
        nodes=tuple(n for n in node.split(",") if n),
    )


# -- canonical_host ------------------------------------------------------------------------

CANONICAL = [
    # every legacy IPv4 form getaddrinfo accepts
    ("127.0.0.1", LOOPBACK),
    ("127.1", LOOPBACK),
    ("127.0.1", LOOPBACK),
    ("2130706433", LOOPBACK),
    ("0x7f000001", LOOPBACK),
    ("0X7F000001", LOOPBACK),
    ("017700000001", LOOPBACK),
    ("0177.0.0.1", LOOPBACK),
    ("0177.1", LOOPBACK),
    ("0x7f.1", LOOPBACK),
    ("0x7f.0x0.0x0.0x1", LOOPBACK),
    ("127.0.0x1", LOOPBACK),
    ("127.0.0.01", LOOPBACK),
    ("00000000000000177.1", LOOPBACK),
    ("127.0.0.1.", LOOPBACK),  # a trailing dot does not make it a name
    ("0", IPv4Address("0.0.0.0")),
    ("0xffffffff", IPv4Address("255.255.255.255")),
    ("1.16777215", IPv4Address("1.255.255.255")),
    # IPv6: brackets, case, mapped and zones
    ("::1", IPv6Address("::1")),
    ("[::1]", IPv6Address("::1")),
    ("0:0:0:0:0:0:0:1", IPv6Address("::1")),
    ("FD00::AB", IPv6Address("fd00::ab")),
    ("::ffff:127.0.0.1", LOOPBACK),
    ("[::ffff:127.0.0.1]", LOOPBACK),
    ("::ffff:7f00:1", LOOPBACK),
    ("::FFFF:10.1.2.3", IPv4Address("10.1.2.3")),
    ("fe80::1%eth0", IPv6Address("fe80::1%eth0")),
    # names: case, one trailing dot, IDNA
    ("LOCALHOST.", "localhost"),
    ("Example.COM", "example.com"),
    ("a_b.example", "a_b.example"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("1.2.3.4.5", "1.2.3.4.5"),  # too many parts: a (numeric-looking) name
    ("08.1.1.1", "08.1.1.1"),  # 8 is not octal: a name, as for getaddrinfo
    ("256.1.1.1", "256.1.1.1"),
    # not addresses for getaddrinfo either (out of range, no digits): names it may look up
    ("0x", "0x"),
    ("4294967296", "4294967296"),
    ("1.16777216", "1.16777216"),
    ("040000000000", "040000000000"),
]


@pytest.mark.parametrize(("text", "expected"), CANONICAL)
def test_canonical_host(text: str, expected) -> None:
    assert canonical_host(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1 x",  # inet_aton tolerates trailing text; getaddrinfo does not
        " 127.0.0.1",
        "[127.0.0.1]",
        "[::1",
        "::1::2",
        "example.com:80",
        "a..b",
        "localhost..",
        "-a.example",
        "a" * 64 + ".example",
        "%6c%6fcalhost",
        "exa mple.com",
    ],
)
def test_canonical_host_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        canonical_host(text)


_inet_part = st.one_of(
    st.integers(0, 2**32).map(str),
    st.integers(0, 2**32).map(lambda n: "0" + format(n, "o")),
    st.integers(0, 2**32).map(lambda n: "0x" + format(n, "x")),
    st.sampled_from(["0", "00", "0x", "08", "09", "0xg", "1e", ""]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_inet_part, min_size=1, max_size=5).map(".".join))
@example("127.1")
@example("0x7f.0.0.1.")
def test_ipv4_forms_agree_with_getaddrinfo(text: str) -> None:
    """Where getaddrinfo reads an IPv4 literal, so does canonical_host, and the same one."""
    try:
        info = socket.getaddrinfo(text, None, socket.AF_INET, flags=socket.AI_NUMERICHOST)
        expected = IPv4Address(info[0][4][0])
    except (OSError, UnicodeError):
        expected = None
    try:
        got = canonical_host(text)
    except ValueError:
        got = None
    if expected is not None:
        assert got == expected
    else:
        assert not isinstance(got, IPv4Address) or text.endswith(".")


def forms(address: int) -> st.SearchStrategy[str]:
    """Every textual form of one IPv4 address: 1 to 4 parts, each dec, oct or hex."""

    def part(value: int) -> st.SearchStrategy[str]:
        return st.sampled_from(
            [str(value), "0" + format(value, "o"), "0x" + format(value, "x"), f"0X{value:X}"]
        )

    def split(parts: int) -> st.SearchStrategy[str]:
        b = address.to_bytes(4, "big")
        values = [*b[: parts - 1], int.from_bytes(b[parts - 1 :], "big")]
        return st.tuples(*(part(v) for v in values)).map(".".join)

    dotted = st.integers(1, 4).flatmap(split)
    return st.one_of(
        dotted,
        dotted.map(lambda t: t + "."),
        st.just(f"::ffff:{IPv4Address(address)}"),
        st.just(f"[::ffff:{IPv4Address(address)}]"),
        st.just(str(IPv6Address((0xFFFF << 32) | address))),
    )


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1).flatmap(lambda a: st.tuples(st.just(a), forms(a))))
def test_every_form_of_a_blacklisted_ipv4_address_is_denied(case) -> None:
    address, text = case
    written = str(IPv4Address(address))
    policy = Policy(blacklist=(rule(host=written),))
    decision = policy.evaluate(text, 443)
    assert not decision.allowed, text
    assert decision.rule == "blacklist.0"
    # and a network around it denies it as well
    around = Policy(blacklist=(rule(host=f"{written}/24"),))
    assert not around.evaluate(text, 443).allowed


_not_local = st.integers(0x01000000, 0xFFFFFFFF).filter(lambda a: a >> 24 != 127)


@settings(max_examples=200, deadline=None)
@given(_not_local, _not_local)
def test_a_blacklist_denies_nothing_else(listed: int, other: int) -> None:
    assume(listed != other)
    assert not is_local_address(IPv4Address(listed))
    policy = Policy(blacklist=(rule(host=str(IPv4Address(listed))),))
    assert policy.evaluate(str(IPv4Address(other)), 80).allowed


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.integers(1, 65535))
def test_evaluate_never_raises(host: str, port: int) -> None:
    policy = Policy(
        whitelist=(rule("whitelist", host="*.example.com, 10.0.0.0/8"),),
        blacklist=(rule(host="localhost"),),
        maplist=(maprule(orghost="a.example", maphost="b.example"),),
    )
    decision = policy.evaluate(host, port)
    assert isinstance(decision, Decision)
    assert policy.admit(host).allowed in (True, False)


# -- loopback is one place -----------------------------------------------------------------

LOCAL_FORMS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "::ffff:127.0.0.1",
    "[::1]",
    "::1",
    "0:0::1",
    "0.0.0.0",
    "0",
    "::",
    "[::]",
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64 well-known prefix
    "localhost",
    "LOCALHOST.",
    "db.localhost",
]


@pytest.mark.parametrize("written", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.0/8"])
@pytest.mark.parametrize("target", LOCAL_FORMS)
def test_a_rule_for_loopback_stops_every_form_of_it(written: str, target: str) -> None:
    policy = Policy(blacklist=(rule(host=written, port="80"),))
    decision = policy.evaluate(target, 80)
    assert not decision.allowed, (written, target)
    assert decision.rule == "blacklist.0"
    assert policy.evaluate(target, 81).allowed  # the port still has to match


@pytest.mark.parametrize("target", ["127.0.0.1.example.com", "10.0.0.1", "::2", "localhostx"])
def test_loopback_rule_is_not_everything(target: str) -> None:
    policy = Policy(blacklist=(rule(host="localhost"),))
    assert policy.evaluate(target, 80).allowed


# -- patterns ------------------------------------------------------------------------------

# (pattern, host, matches)
HOST_MATCHES = [
    ("*", "anything.example", True),
    ("*", "10.0.0.1", True),
    ("10.0.0.0/8", "10.200.0.1", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("10.0.0.0/8", "012.0.0.1", True),  # octal 012 = 10
    ("10.0.0.0/8", "::ffff:10.9.9.9", True),
    ("10.0.0.0/8", "64:ff9b::a00:1", True),
    ("10.1.2.3/8", "10.9.9.9", True),  # host bits are ignored
    ("[fd00::]/8", "fd12::1", True),
    ("fd00::/8", "fe80::1", False),
    ("fe80::/10", "fe80::1%eth0", True),
    ("::ffff:10.0.0.0/104", "10.5.5.5", True),  # a mapped network is the IPv4 one
    ("192.168.1.1", "192.168.1.1", True),
    ("192.168.1.1", "192.168.1.2", False),
    ("192.168.1.1", "3232235777", True),
    ("2001:db8::1", "[2001:DB8:0::1]", True),
    ("db.example.com", "DB.Example.COM.", True),
    ("db.example.com", "x.db.example.com", False),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
    ("*.Example.COM.", "a.example.com", True),
    ("*.localhost", "127.0.0.1", True),
    ("bücher.example", "xn--bcher-kva.example", True),
    ("example.com", "93.184.216.34", False),  # a name rule never matches an address
    ("10.0.0.0/8", "ten.example", False),
]


@pytest.mark.parametrize(("pattern", "host", "matches"), HOST_MATCHES)
def test_host_patterns(pattern: str, host: str, matches: bool) -> None:
    assert parse_host_pattern(pattern).matches(canonical_host(host)) is matches


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [
        ("*", HostKind.ANY),
        ("*.a.example", HostKind.SUFFIX),
        ("*.localhost", HostKind.LOCAL),
        ("localhost", HostKind.LOCAL),
        ("a.example", HostKind.NAME),
        ("127.0.0.1", HostKind.NETWORK),
        ("::/0", HostKind.NETWORK),
    ],
)
def test_host_pattern_kinds(pattern: str, kind: HostKind) -> None:
    assert parse_host_pattern(pattern).kind is kind


@pytest.mark.parametrize(
    "pattern",
    ["", "a.*.example", "*example.com", "**", "10.0.0.0/33", "::/129", "10.0.0.0/x", "x/8", "a b"],
)
def test_bad_host_patterns(pattern: str) -> None:
    with pytest.raises(ValueError):
        parse_host_pattern(pattern)


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [("80", 80, 80), ("8000-8999", 8000, 8999), ("*", 1, 65535), ("1-65535", 1, 65535)],
)
def test_port_ranges(text: str, low: int, high: int) -> None:
    r = parse_port_range(text)
    assert (r.low, r.high) == (low, high)
    assert low in r and high in r and (low - 1) not in r and (high + 1) not in r


@pytest.mark.parametrize("text", ["0", "65536", "90-80", "-1", "a", "80-", "+80", "٨٠"])
def test_bad_port_ranges(text: str) -> None:
    with pytest.raises(ValueError):
        parse_port_range(text)


@pytest.mark.parametrize("text", ["*.example.com", "10.0.0.0/8", "a,b", "*"])
def test_map_host_is_one_host(text: str) -> None:
    with pytest.raises(ValueError):
        parse_map_host(text)


def test_map_host_is_canonical() -> None:
    assert parse_map_host("0x7f.1") == "127.0.0.1"
    assert parse_map_host("[::1]") == "::1"
    assert parse_map_host("Web.Example.") == "web.example"


# -- evaluation ----------------------------------------------------------------------------


def test_empty_policy_allows_everything_unchanged() -> None:
    policy = Policy()
    assert policy.empty and not policy.judges_targets
    assert policy.evaluate("not a host!", 1) == Decision(True, "not a host!", 1)
    assert policy.admit("10.1.1.1").allowed


# (policy, host, port, node, allowed, rule, target)
SCOPED_BLACKLIST = rule(cluster="c", node="si", host="localhost", port="80")
EVALUATIONS = [
    # a blacklist rule scoped to streams through sink node si of cluster c
    (Policy(blacklist=(SCOPED_BLACKLIST,)), "localhost", 80, "si", False, "blacklist.0", None),
    (Policy(blacklist=(SCOPED_BLACKLIST,)), "localhost", 80, "si2", True, "", None),
    (Policy(blacklist=(SCOPED_BLACKLIST,)), "localhost", 8080, "si", True, "", None),
    # whitelist: only these; blacklist carves out of it
    (
        Policy(whitelist=(rule("whitelist", host="*.example.com", port="443"),)),
        "www.example.com",
        443,
        "si",
        True,
        "",
        None,
    ),
    (
        Policy(whitelist=(rule("whitelist", host="*.example.com", port="443"),)),
        "www.example.com",
        80,
        "si",
        False,
        "whitelist",
        None,
    ),
    (
        Policy(
            whitelist=(rule("whitelist", host="*.example.com"),),
            blacklist=(rule(host="admin.example.com"),),
        ),
        "ADMIN.example.com.",
        443,
        "si",
        False,
        "blacklist.0",
        None,
    ),
    # a whitelist rule for another node does not allow anything through this one
    (
        Policy(whitelist=(rule("whitelist", node="si2"),)),
        "www.example.com",
        443,
        "si",
        False,
        "whitelist",
        None,
    ),
    # maplist first: the lists judge the rewritten target
    (
        Policy(
            maplist=(maprule(orghost="db", orgport="3306", maphost="10.0.0.5"),),
            whitelist=(rule("whitelist", host="10.0.0.5", port="3306"),),
        ),
        "db",
        3306,
        "si",
        True,
        "",
        ("10.0.0.5", 3306),
    ),
    (
        Policy(
            maplist=(maprule(orghost="innocent.example", maphost="127.0.0.1"),),
            blacklist=(rule(host="localhost"),),
        ),
        "innocent.example",
        80,
        "si",
        False,
        "blacklist.0",
        ("127.0.0.1", 80),
    ),
    (
        Policy(
            maplist=(maprule(orghost="evil.example", maphost="sinkhole.example"),),
            blacklist=(rule(host="evil.example"),),
        ),
        "evil.example",
        80,
        "si",
        True,
        "",
        ("sinkhole.example", 80),
    ),
    # invalid hosts are denied when lists judge targets
    (Policy(blacklist=(rule(host="10.0.0.1"),)), "a b", 80, "si", False, "invalid-host", None),
    (Policy(maplist=(maprule(orgport="80", mapport=8080),)), "a b", 80, "si", True, "", None),
]


@pytest.mark.parametrize(
    ("policy", "host", "port", "node", "allowed", "decided_by", "target"), EVALUATIONS
)
def test_evaluation(policy, host, port, node, allowed, decided_by, target) -> None:
    decision = policy.evaluate(host, port, cluster="c", node=node)
    assert decision.allowed is allowed
    assert decision.rule == decided_by
    if target is not None:
        assert (decision.target_host, decision.target_port) == target
        assert decision.mapped_by.startswith("maplist.0 (")
    if not allowed:
        assert decision.rule_text


def test_maplist_first_match_wins_and_applies_once() -> None:
    policy = Policy(
        maplist=(
            maprule("a", orghost="a.example", maphost="b.example"),
            maprule("b", orghost="b.example", maphost="c.example"),
            maprule("c", orghost="a.example", maphost="z.example"),
            maprule("d", orgport="80", mapport=8080),
        )
    )
    assert policy.map_target("A.example.", 443)[:2] == ("b.example", 443)
    assert policy.map_target("b.example", 443)[:2] == ("c.example", 443)
    assert policy.map_target("x.example", 80)[:2] == ("x.example", 8080)
    assert policy.map_target("x.example", 81) == ("x.example", 81, None)
    mapped = policy.map_target("x.example", 80)
    assert (mapped.host, mapped.port, mapped.rule) == ("x.example", 8080, policy.maplist[3])


def test_maplist_can_be_scoped_to_a_node() -> None:
    policy = Policy(maplist=(maprule(orghost="db", maphost="10.0.0.5", node="si"),))
    assert policy.map_target("db", 1, node="si").host == "10.0.0.5"
    assert policy.map_target("db", 1, node="si2").host == "db"


def test_rule_texts() -> None:
    decision = Policy(blacklist=(SCOPED_BLACKLIST,)).evaluate(
        "localhost", 80, cluster="c", node="si"
    )
    assert decision.rule_text == "blacklist.0 (cluster=c node=si host=localhost port=80)"
    wl = Policy(
        whitelist=(rule("whitelist", "web.1", port="443"), rule("whitelist", "x", port="1"))
    )
    assert wl.evaluate("a", 80).rule_text == "a:80 is not in whitelist web, x"


# -- resolved addresses (the sink) -----------------------------------------------------------


def test_a_name_is_denied_when_any_address_is_blacklisted() -> None:
    policy = Policy(blacklist=(rule(host="127.0.0.1"),))
    assert policy.judge("rebind.example", 80).allowed  # the name alone says nothing
    decision = policy.judge("rebind.example", 80, addresses=["93.184.216.34", "127.0.0.1"])
    assert not decision.allowed
    assert decision.rule == "blacklist.0"
    assert "rebind.example -> 127.0.0.1" in decision.rule_text
    assert not policy.judge("x.example", 80, addresses=["::ffff:127.0.0.1"]).allowed
    assert not policy.judge("x.example", 80, addresses=["::1"]).allowed


def test_a_name_passes_a_whitelist_by_name_or_by_all_its_addresses() -> None:
    policy = Policy(whitelist=(rule("whitelist", host="10.0.0.0/8, db.example"),))
    assert policy.judge("db.example", 5432, addresses=["192.0.2.1"]).allowed
    assert policy.judge("x.example", 5432, addresses=["10.0.0.1", "10.0.0.2"]).allowed
    mixed = policy.judge("x.example", 5432, addresses=["10.0.0.1", "192.0.2.1"])
    assert not mixed.allowed and mixed.rule == "whitelist"
    assert "(10.0.0.1, 192.0.2.1)" in mixed.rule_text


def test_garbage_from_a_resolver_is_denied() -> None:
    policy = Policy(blacklist=(rule(host="10.0.0.1"),))
    assert policy.judge("x.example", 80, addresses=["not-an-address"]).rule == "invalid-host"


# -- access lists ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("::1", True),  # loopback is one place
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("2001:db8::7", True),
        ("192.0.2.1", False),
        ("2001:db9::1", False),
        ("localhost", True),  # a unix-socket client
        ("not an address", False),
    ],
)
def test_access_list(client: str, allowed: bool) -> None:
    policy = Policy(accesslist=(rule("accesslist", host="127.0.0.1, 10.0.0.0/8, 2001:db8::/32"),))
    decision = policy.admit(client)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rule == "accesslist"
        assert decision.rule_text == f"client {client} is not in accesslist 0"


def test_client_host() -> None:
    from twisted.internet.address import IPv4Address as TwistedIPv4
    from twisted.internet.address import UNIXAddress

    assert client_host(TwistedIPv4("TCP", "10.0.0.1", 5)) == "10.0.0.1"
    assert client_host(UNIXAddress(None)) == "localhost"


def test_policy_ref_is_mutable_and_shared() -> None:
    ref = PolicyRef()
    assert ref.policy.empty
    assert ref.admit("10.0.0.1").allowed and ref.evaluate("a", 1).allowed
    ref.policy = Policy(blacklist=(rule(host="*"),), accesslist=(rule(host="10.0.0.0/8"),))
    assert not ref.policy.evaluate("a", 1).allowed
    # admit and evaluate read the policy held at the moment of the call
    assert not ref.evaluate("a", 1).allowed
    assert ref.admit("10.0.0.1").allowed and not ref.admit("192.0.2.1").allowed


# -- lookups (SOCKS RESOLVE / RESOLVE_PTR) -------------------------------------------------------


def test_a_lookup_is_judged_by_host_on_any_port():
    policy = Policy(
        whitelist=(rule("whitelist", "web", host="*.example.com", port="443"),),
        blacklist=(
            rule(name="admin", host="admin.example.com"),
            rule(name="ssh", host="ssh.example.com", port="22"),
            rule(name="lan", host="10.0.0.0/8"),
        ),
    )
    assert policy.judge_lookup("www.example.com").allowed  # whitelisted for port 443
    assert policy.judge_lookup("ssh.example.com").allowed  # only port 22 is blacklisted
    assert policy.judge_lookup("admin.example.com").rule == "blacklist.admin"
    assert policy.judge_lookup("www.example.org").rule == "whitelist"
    assert policy.judge_lookup("in.example.com", addresses=["10.0.0.1"]).rule == "blacklist.lan"
    assert policy.judge_lookup("bad host!").rule == "invalid-host"
    assert Policy().judge_lookup("anything").allowed
