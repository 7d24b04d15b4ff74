"""Policy: which clients may use a source, which targets a stream may reach, where it really goes.

Pure functions over parsed rules: no Twisted, no sockets, no DNS. The configuration
(``socketeer.config.policies``) parses the access list, blacklist, whitelist and maplist
profiles into one ``Policy`` per sourcesink; a source consults it before it opens a stream,
a sink before it connects (the sink's policy is authoritative: it judges the addresses it
resolved itself and connects to exactly those).

Evaluation of a target ``host:port`` reached through (or coming from) node ``node``:

1. **maplist**: the first maplist rule that matches rewrites the target (at most once, no
   chaining). Lists judge where a connection really goes, so a maplist can neither launder a
   blacklisted target nor need a whitelist entry for the name it replaces.
2. **whitelist**: if the sourcesink references any whitelist, the (mapped) target must match
   one of its rules, else it is denied.
3. **blacklist**: a target matching any blacklist rule is denied (deny wins over allow: a
   blacklist carves exceptions out of a whitelist).

Hosts are compared in a canonical form (``canonical_host``): every textual form of an IPv4
address that ``getaddrinfo`` accepts (``127.1``, ``2130706433``, ``0x7f000001``,
``0177.0.0.1``), IPv6 with brackets, zones and IPv4-mapped addresses (``::ffff:127.0.0.1`` is
``127.0.0.1``), names lowercased without their trailing dot. The machine's own loopback is
one place: a rule naming ``localhost``, any ``*.localhost``, or a network that touches
127.0.0.0/8, 0.0.0.0/8, ``::1`` or ``::`` matches all of those addresses and names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import NamedTuple

__all__ = [
    "Decision",
    "HostPattern",
    "MapRule",
    "MappedTarget",
    "Policy",
    "PolicyRef",
    "PortRange",
    "Rule",
    "canonical_host",
    "client_host",
    "parse_host_pattern",
    "parse_map_host",
    "parse_port",
    "parse_port_range",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
#: A canonical host: an address, or a lowercased name without its trailing dot.
Host = str | IPAddress

HOST_PATTERN_ALLOWED = (
    "an IP address (any form, e.g. 127.0.0.1, ::1), a CIDR range (10.0.0.0/8, fd00::/8), "
    "a host name, *.domain (its subdomains) or * (any); comma-separated"
)
CLIENT_PATTERN_ALLOWED = (
    "an IP address (any form), a CIDR range (10.0.0.0/8, fd00::/8), localhost (this host's "
    "loopback and unix-socket clients) or * (any); comma-separated"
)
PORT_PATTERN_ALLOWED = "a port 1..65535, a range such as 8000-8999, or * (any); comma-separated"
MAP_HOST_ALLOWED = "one host name or IP address (no wildcard or range)"
PORT_ALLOWED = "one port 1..65535"

_LOCAL_NETWORKS: tuple[IPNetwork, ...] = (
    IPv4Network("127.0.0.0/8"),
    IPv4Network("0.0.0.0/8"),  # 0.0.0.0 reaches this host
    IPv6Network("::1/128"),
    IPv6Network("::/128"),
)
_MAPPED = IPv6Network("::ffff:0:0/96")
_COMPATIBLE = IPv6Network("::/96")  # deprecated IPv4-compatible ::a.b.c.d (a > 0)
_NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix: the same IPv4 host

_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?")
_INET_PART_RE = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_INET_MAX = (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)


# -- canonical hosts ----------------------------------------------------------------------


def _inet_aton(text: str) -> IPv4Address | None:
    """The IPv4 address ``getaddrinfo`` reads in *text* (inet_aton rules), or None.

    1 to 4 parts separated by dots, each decimal, octal (leading 0) or hex (0x); the last
    part fills the remaining bytes: ``a.b.c.d``, ``a.b.c`` (16-bit c), ``a.b`` (24-bit b),
    ``a`` (32-bit). No trailing garbage, no empty part.
    """
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if not _INET_PART_RE.fullmatch(part):
            return None
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:], 16))
        elif part.startswith("0"):
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 0xFF for v in head) or last > _INET_MAX[len(head)]:
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    number = number << (8 * (4 - len(head))) | last
    return IPv4Address(number)


def _unmap(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _canonical_name(text: str) -> str:
    name = text[:-1] if text.endswith(".") else text
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("not a valid international host name") from None
    name = name.lower()
    if not name or len(name) > 253 or not all(_LABEL_RE.fullmatch(p) for p in name.split(".")):
        raise ValueError("neither an IP address nor a valid host name")
    return name


def canonical_host(text: str) -> Host:
    """The canonical form of a host as a client or a configuration writes it.

    Addresses come back as ``ipaddress`` objects (IPv4-mapped IPv6 as IPv4, an IPv6 zone
    kept), names as lowercase ASCII (IDNA) without the trailing dot. A name that is an
    IPv4 address once its trailing dot is gone is that address. Raises ValueError for
    anything that is neither.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("empty host")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        try:
            return _unmap(IPv6Address(inner))
        except ValueError:
            raise ValueError(f"invalid bracketed IPv6 address {text!r}") from None
    if ":" in text:
        try:
            return _unmap(IPv6Address(text))
        except ValueError:
            raise ValueError(f"invalid IPv6 address {text!r}") from None
    address = _inet_aton(text)
    if address is not None:
        return address
    if text.endswith(".") and (address := _inet_aton(text[:-1])) is not None:
        return address
    return _canonical_name(text)


def host_text(host: Host) -> str:
    """How a canonical host is written in messages and handed to a connect."""
    return str(host)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 host an IPv6 address reaches as well: IPv4-compatible or NAT64 forms."""
    if address in _NAT64 or (address in _COMPATIBLE and int(address) >> 24):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def client_host(address: object) -> str:
    """The host of a Twisted peer address; a unix-socket client (no host) is ``localhost``."""
    host = getattr(address, "host", None)
    return host if isinstance(host, str) and host else "localhost"


def is_local_address(address: IPAddress) -> bool:
    """Loopback, or an unspecified address (which reaches this host too)."""
    address = _unmap(address)
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            address = embedded
    return any(address.version == n.version and address in n for n in _LOCAL_NETWORKS)


def is_local_name(name: str) -> bool:
    """``localhost`` and its subdomains always resolve to loopback (RFC 6761)."""
    return name == "localhost" or name.endswith(".localhost")


# -- patterns -----------------------------------------------------------------------------


class HostKind(Enum):
    ANY = "any"
    NETWORK = "network"  # an address is a /32 or /128
    NAME = "name"
    SUFFIX = "suffix"  # *.example.com: subdomains only
    LOCAL = "local"  # localhost, *.localhost


@dataclass(frozen=True)
class HostPattern:
    """One host in a rule, as written (``text``) and as matched."""

    text: str
    kind: HostKind
    network: IPNetwork | None = None
    name: str = ""
    local: bool = False  # also matches the whole loopback (see module docstring)

    def matches(self, host: Host) -> bool:
        if self.kind is HostKind.ANY:
            return True
        if isinstance(host, str):
            if self.local and is_local_name(host):
                return True
            if self.kind is HostKind.NAME:
                return host == self.name
            if self.kind is HostKind.SUFFIX:
                return host.endswith("." + self.name)
            return False
        if self.local and is_local_address(host):
            return True
        network = self.network
        if network is None:
            return False
        host = _unmap(host)
        if host.version == network.version and host in network:
            return True
        if isinstance(host, IPv6Address) and network.version == 4:
            embedded = _embedded_ipv4(host)
            return embedded is not None and embedded in network
        return False


def _network_pattern(text: str, network: IPNetwork) -> HostPattern:
    if isinstance(network, IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        network = IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    local = any(network.version == n.version and network.overlaps(n) for n in _LOCAL_NETWORKS)
    return HostPattern(text, HostKind.NETWORK, network=network, local=local)


def parse_host_pattern(text: str) -> HostPattern:
    """One host pattern of a rule; ValueError says what is wrong with it."""
    if text == "*":
        return HostPattern(text, HostKind.ANY)
    if text.startswith("*."):
        suffix = _canonical_name(text[2:])
        if is_local_name(suffix):
            return HostPattern(text, HostKind.LOCAL, name=suffix, local=True)
        return HostPattern(text, HostKind.SUFFIX, name=suffix)
    if "*" in text:
        raise ValueError("a wildcard is only allowed as a whole first label (*.example.com)")
    if "/" in text:
        address_text, _, prefix_text = text.partition("/")
        if address_text.startswith("[") and address_text.endswith("]"):
            address_text = address_text[1:-1]
        try:
            # An IPv6 network is kept as written (a mapped one becomes IPv4 below).
            address = IPv6Address(address_text) if ":" in address_text else None
            address = address or canonical_host(address_text)
        except ValueError:
            address = None
        if not isinstance(address, IPv4Address | IPv6Address):
            raise ValueError(f"{address_text!r} is not an IP address")
        if not (prefix_text.isascii() and prefix_text.isdigit()):
            raise ValueError(f"invalid prefix length {prefix_text!r}")
        if isinstance(address, IPv6Address) and address.scope_id:
            address = IPv6Address(int(address))
        try:
            network = ipaddress.ip_network((address, int(prefix_text)), strict=False)
        except ValueError as e:
            raise ValueError(str(e)) from None
        return _network_pattern(text, network)
    host = canonical_host(text)
    if isinstance(host, str):
        if is_local_name(host):
            return HostPattern(text, HostKind.LOCAL, name=host, local=True)
        return HostPattern(text, HostKind.NAME, name=host)
    if isinstance(host, IPv6Address) and host.scope_id:
        host = IPv6Address(int(host))
    return _network_pattern(text, ipaddress.ip_network(host))


def parse_map_host(text: str) -> str:
    """A maplist's ``maphost``: one host, returned in canonical text."""
    if "*" in text or "/" in text or "," in text:
        raise ValueError("not a single host")
    return host_text(canonical_host(text))


@dataclass(frozen=True)
class PortRange:
    low: int
    high: int

    def __contains__(self, port: int) -> bool:
        return self.low <= port <= self.high

    def __str__(self) -> str:
        if (self.low, self.high) == (1, 65535):
            return "*"
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError("not a port number")
    if not 1 <= int(text) <= 65535:
        raise ValueError("out of range")
    return int(text)


def parse_port_range(text: str) -> PortRange:
    if text == "*":
        return PortRange(1, 65535)
    low_text, dash, high_text = text.partition("-")
    low = parse_port(low_text.strip())
    high = parse_port(high_text.strip()) if dash else low
    if high < low:
        raise ValueError("the range is empty")
    return PortRange(low, high)


# -- rules --------------------------------------------------------------------------------


def _canonical_or_none(text: str) -> Host | None:
    try:
        return canonical_host(text)
    except ValueError:
        return None


class _Scoped:
    """What every list entry shares: a profile, and the cluster/node it applies to."""

    name: str
    clusters: tuple[str, ...]
    nodes: tuple[str, ...]

    @property
    def profile(self) -> str:
        return self.name.partition(".")[0]

    def applies(self, cluster: str, node: str) -> bool:
        return (not self.clusters or cluster in self.clusters) and (
            not self.nodes or node in self.nodes
        )

    def _describe(self, rule_id: str, *fields: tuple[str, str], empty: str = "") -> str:
        scope = [("cluster", ",".join(self.clusters)), ("node", ",".join(self.nodes))]
        shown = " ".join(f"{k}={v}" for k, v in (*scope, *fields) if v) or empty
        return f"{rule_id} ({shown})"


@dataclass(frozen=True)
class Rule(_Scoped):
    """One entry of an access list, whitelist or blacklist profile.

    Empty fields match anything. ``clusters``/``nodes`` name the node at the other end of
    the stream: the sink a source's stream goes to, the source a sink's stream comes from.
    """

    kind: str  # accesslist, whitelist, blacklist
    name: str  # <profile> or <profile>.<entry>
    hosts: tuple[HostPattern, ...] = ()
    ports: tuple[PortRange, ...] = ()
    clusters: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.name}"

    def describe(self) -> str:
        return self._describe(
            self.id,
            ("host", ",".join(p.text for p in self.hosts)),
            ("port", ",".join(str(p) for p in self.ports)),
            empty="any",
        )

    def matches_host(self, host: Host) -> bool:
        return not self.hosts or any(p.matches(host) for p in self.hosts)

    def matches_port(self, port: int) -> bool:
        return not self.ports or any(port in r for r in self.ports)


@dataclass(frozen=True)
class MapRule(_Scoped):
    """One maplist entry: targets matching ``orghosts``/``orgports`` go to ``maphost:mapport``.

    A missing ``maphost`` (or ``mapport``) keeps the original host (or port).
    """

    name: str
    maphost: str | None = None
    mapport: int | None = None
    orghosts: tuple[HostPattern, ...] = ()
    orgports: tuple[PortRange, ...] = ()
    clusters: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"maplist.{self.name}"

    def describe(self) -> str:
        return self._describe(
            self.id,
            ("orghost", ",".join(p.text for p in self.orghosts)),
            ("orgport", ",".join(str(p) for p in self.orgports)),
            ("maphost", self.maphost or ""),
            ("mapport", str(self.mapport or "")),
        )

    def matches(self, host: Host | None, port: int, cluster: str, node: str) -> bool:
        if not self.applies(cluster, node):
            return False
        if self.orgports and not any(port in r for r in self.orgports):
            return False
        if not self.orghosts:
            return True
        return host is not None and any(p.matches(host) for p in self.orghosts)


@dataclass(frozen=True)
class Decision:
    """The outcome of an evaluation.

    ``rule`` is the id that decided a denial (``blacklist.<profile>[.<entry>]``,
    ``whitelist``, ``accesslist``, ``invalid-host``) and names the ``denied:<rule>``
    counter; ``rule_text`` says the same for people. ``mapped_by`` describes the maplist
    rule that rewrote the target, if one did.
    """

    allowed: bool
    target_host: str
    target_port: int
    rule: str = ""
    rule_text: str = ""
    mapped_by: str = ""


def _profiles(rules: Sequence[Rule]) -> str:
    return ", ".join(dict.fromkeys(r.profile for r in rules))


class MappedTarget(NamedTuple):
    """Where a target really goes after the maplist, and the rule that moved it (None: none)."""

    host: str
    port: int
    rule: MapRule | None


@dataclass(frozen=True)
class Policy:
    """The parsed lists one sourcesink references, in reference order."""

    accesslist: tuple[Rule, ...] = ()
    whitelist: tuple[Rule, ...] = ()
    blacklist: tuple[Rule, ...] = ()
    maplist: tuple[MapRule, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.accesslist or self.whitelist or self.blacklist or self.maplist)

    @property
    def judges_targets(self) -> bool:
        return bool(self.whitelist or self.blacklist)

    # -- clients --------------------------------------------------------------------------

    def admit(self, client: str) -> Decision:
        """May a client with this peer address (IPv4, IPv6, IPv4-mapped) use the source?

        A client of a unix-socket listener (no IP address) counts as ``localhost``.
        """
        if not self.accesslist:
            return Decision(True, client, 0)
        host = _canonical_or_none(client)
        if host is not None:
            for rule in self.accesslist:
                if rule.matches_host(host):
                    return Decision(True, client, 0, rule.id, rule.describe())
        return Decision(
            False,
            client,
            0,
            "accesslist",
            f"client {client} is not in accesslist {_profiles(self.accesslist)}",
        )

    # -- targets --------------------------------------------------------------------------

    def map_target(
        self, host: str, port: int, *, cluster: str = "", node: str = ""
    ) -> MappedTarget:
        """Apply the first matching maplist rule (once): the target and the rule, or None."""
        if not self.maplist:
            return MappedTarget(host, port, None)
        canonical = _canonical_or_none(host)
        for rule in self.maplist:
            if rule.matches(canonical, port, cluster, node):
                return MappedTarget(rule.maphost or host, rule.mapport or port, rule)
        return MappedTarget(host, port, None)

    def blacklisted(
        self, host: Host, port: int, *, cluster: str = "", node: str = ""
    ) -> Rule | None:
        """The first blacklist rule that matches the canonical host, or None."""
        for rule in self.blacklist:
            if rule.applies(cluster, node) and rule.matches_port(port) and rule.matches_host(host):
                return rule
        return None

    def judge(
        self,
        host: str,
        port: int,
        *,
        cluster: str = "",
        node: str = "",
        addresses: Sequence[str] | None = None,
    ) -> Decision:
        """Whitelist, then blacklist, for a target that is already mapped.

        With ``addresses`` (what a name resolved to, at a sink) the name and every address
        are judged: the whitelist must match the name or every address, and the blacklist
        must match neither the name nor any address.
        """
        if not self.judges_targets:
            return Decision(True, host, port)
        canonical = _canonical_or_none(host)
        if canonical is None:
            return Decision(False, host, port, "invalid-host", f"invalid host {host!r}")
        resolved: list[Host] = []
        for text in addresses or ():
            address = _canonical_or_none(text)
            if not isinstance(address, IPv4Address | IPv6Address):
                return Decision(False, host, port, "invalid-host", f"{host} resolved to {text!r}")
            resolved.append(address)
        if self.whitelist:
            rules = [r for r in self.whitelist if r.applies(cluster, node) and r.matches_port(port)]
            listed = any(r.matches_host(canonical) for r in rules) or (
                bool(resolved) and all(any(r.matches_host(a) for r in rules) for a in resolved)
            )
            if not listed:
                what = f"{host}:{port}"
                if resolved:
                    what += f" ({', '.join(host_text(a) for a in resolved)})"
                return Decision(
                    False,
                    host,
                    port,
                    "whitelist",
                    f"{what} is not in whitelist {_profiles(self.whitelist)}",
                )
        for candidate in (canonical, *resolved):
            rule = self.blacklisted(candidate, port, cluster=cluster, node=node)
            if rule is not None:
                text = rule.describe()
                if candidate is not canonical:
                    text += f", matched by {host} -> {host_text(candidate)}"
                return Decision(False, host, port, rule.id, text)
        return Decision(True, host, port)

    def judge_lookup(
        self,
        host: str,
        *,
        cluster: str = "",
        node: str = "",
        addresses: Sequence[str] | None = None,
    ) -> Decision:
        """A name lookup (SOCKS RESOLVE) or a reverse one (RESOLVE_PTR, *host* an address).

        A lookup has no port: it is allowed if a connection to *host* could be. So the
        whitelist must match the host (or every address it resolved to) on some port, and a
        blacklist rule denies it only if it covers every port (a rule for port 22 leaves
        port 80 reachable). The maplist does not apply (it may depend on the port).
        """
        if not self.judges_targets:
            return Decision(True, host, 0)
        canonical = _canonical_or_none(host)
        if canonical is None:
            return Decision(False, host, 0, "invalid-host", f"invalid host {host!r}")
        resolved: list[Host] = []
        for text in addresses or ():
            address = _canonical_or_none(text)
            if not isinstance(address, IPv4Address | IPv6Address):
                return Decision(False, host, 0, "invalid-host", f"{host} resolved to {text!r}")
            resolved.append(address)
        if self.whitelist:
            rules = [r for r in self.whitelist if r.applies(cluster, node)]
            listed = any(r.matches_host(canonical) for r in rules) or (
                bool(resolved) and all(any(r.matches_host(a) for r in rules) for a in resolved)
            )
            if not listed:
                return Decision(
                    False,
                    host,
                    0,
                    "whitelist",
                    f"lookup of {host} is not in whitelist {_profiles(self.whitelist)}",
                )
        for candidate in (canonical, *resolved):
            for rule in self.blacklist:
                if rule.applies(cluster, node) and not rule.ports and rule.matches_host(candidate):
                    text = f"lookup of {host}: {rule.describe()}"
                    if candidate is not canonical:
                        text += f", matched by {host} -> {host_text(candidate)}"
                    return Decision(False, host, 0, rule.id, text)
        return Decision(True, host, 0)

    def evaluate(self, host: str, port: int, *, cluster: str = "", node: str = "") -> Decision:
        """The whole evaluation a source makes: maplist, then whitelist, then blacklist.

        Names are judged as names (the source does not resolve them; the sink does).
        """
        target_host, target_port, mapped = self.map_target(host, port, cluster=cluster, node=node)
        decision = self.judge(target_host, target_port, cluster=cluster, node=node)
        if mapped is None:
            return decision
        return Decision(
            decision.allowed,
            decision.target_host,
            decision.target_port,
            decision.rule,
            decision.rule_text,
            mapped.describe(),
        )


EMPTY_POLICY = Policy()


@dataclass
class PolicyRef:
    """A mutable holder: running sources and sinks read ``policy`` at every decision, and a
    reload (SIGHUP) swaps it; established streams are never re-judged."""

    policy: Policy = field(default=EMPTY_POLICY)

    def admit(self, client: str) -> Decision:
        """The policy held now on a client (:meth:`Policy.admit`)."""
        return self.policy.admit(client)

    def evaluate(self, host: str, port: int, *, cluster: str = "", node: str = "") -> Decision:
        """The policy held now on a target (:meth:`Policy.evaluate`)."""
        return self.policy.evaluate(host, port, cluster=cluster, node=node)

    def judge_lookup(self, host: str, *, cluster: str = "", node: str = "") -> Decision:
        """The policy held now on a name lookup (:meth:`Policy.judge_lookup`)."""
        return self.policy.judge_lookup(host, cluster=cluster, node=node)
