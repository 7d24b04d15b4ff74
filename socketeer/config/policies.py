r"""Configuration: reads a Java ``.properties`` file into a frozen Config.

The keys are the ones of the original (Java) Socketeer, kept verbatim and
case-sensitive, so existing ``socketeer.properties`` files keep working::

    socketeer.general.messagingserverenabled=true
    socketeer.general.messagingserverport=61626
    socketeer.sourcesink.0.clustername=c
    socketeer.sourcesink.0.nodename=si
    socketeer.sourcesink.0.channel=stomp://localhost:61626/sisotopic
    socketeer.sourcesink.0.isSpawningAndResolvingSink=true

Every error is a ConfigError that names the file, the line, the key and what
would have been allowed, because the person reading it is editing that file.
Unknown keys are only warnings (with a "did you mean" suggestion): a typo must
be visible, but a file written for a newer Socketeer should still start.

Values follow Java rules (comments, ``=``/``:``/space separators, ``\``
continuation lines, ``\uXXXX`` escapes) and surrounding whitespace is stripped.
Because Java unescapes ``\:`` to ``:``, an endpoint string that needs a
literal ``\:`` (an IPv6 interface) must double the backslash in the file::

    socketeer.general.messagingserverport=tcp6:61626:interface=\\:\\:1

This module is pure: it never imports the reactor.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import javaproperties

if TYPE_CHECKING:
    from socketeer.config.security import BrokerTLSConfig

from socketeer.addresses import is_ip
from socketeer.channel.url import ChannelSpec, ChannelURLError, Secret, parse_channel_url
from socketeer.config.status import STATUS_KEYS, StatusConfig, is_status_user_key, status_config
from socketeer.policy import (
    CLIENT_PATTERN_ALLOWED,
    EMPTY_POLICY,
    HOST_PATTERN_ALLOWED,
    MAP_HOST_ALLOWED,
    PORT_ALLOWED,
    PORT_PATTERN_ALLOWED,
    HostKind,
    MapRule,
    Policy,
    Rule,
    parse_host_pattern,
    parse_map_host,
    parse_port,
    parse_port_range,
)

__all__ = [
    "BrokerConfig",
    "Config",
    "ProxyConfig",
    "ConfigError",
    "SourceSinkConfig",
    "load_config",
    "parse_config",
]

GENERAL = "socketeer.general."
SOURCESINK = "socketeer.sourcesink."
USER_PREFIX = GENERAL + "messagingserveruser."

K_ENABLED = GENERAL + "messagingserverenabled"
K_PORT = GENERAL + "messagingserverport"
K_INTERFACE = GENERAL + "messagingserverinterface"
K_MAXFRAME = GENERAL + "messagingservermaxframesize"
# Security (socketeer/security.py): the broker's TLS listener, per-login destinations,
# requireencryption and the sealed-message age window.
K_SSLPORT = GENERAL + "messagingserversslport"
K_SSLCERT = GENERAL + "messagingserversslcert"
K_SSLKEY = GENERAL + "messagingserversslkey"
K_SSLCLIENTCA = GENERAL + "messagingserversslclientca"
K_REQUIRE_ENCRYPTION = GENERAL + "requireencryption"
K_SEAL_MAX_AGE = GENERAL + "sealmaxage"
USER_DEST_PREFIX = GENERAL + "messagingserveruserdestinations."
GENERAL_KEYS = (
    K_ENABLED,
    K_PORT,
    K_INTERFACE,
    K_MAXFRAME,
    K_SSLPORT,
    K_SSLCERT,
    K_SSLKEY,
    K_SSLCLIENTCA,
    K_REQUIRE_ENCRYPTION,
    K_SEAL_MAX_AGE,
)
GENERAL_KEYS += STATUS_KEYS  # the status server (socketeer/opsconfig.py)

SOURCESINK_KEYS = (
    "clustername",
    "nodename",
    "channel",
    "serverport",
    "serverinterface",
    "isSpawningAndResolvingSink",
    "peernode",
    "fixedHost",
    "fixedPort",
    "fixedType",
    "accesslist",
    "whitelist",
    "blacklist",
    "maplist",
    "connecttimeout",
    "window",
    "socks4enabled",
    "socks5enabled",
    "httpenabled",
    "authorisation",
    "handshaketimeout",
    "idletimeout",
    "graceperiod",
    "pinginterval",
)
AUTH = "socketeer.authorisation."
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

DEFAULT_INTERFACE = "127.0.0.1"
DEFAULT_BROKER_PORT = 61626
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
MAX_FRAME_SIZE_RANGE = (4096, 256 * 1024 * 1024)
DEFAULT_WINDOW = 4 * 1024 * 1024
WINDOW_RANGE = (64 * 1024, 64 * 1024 * 1024)
DEFAULT_CONNECT_TIMEOUT = 10.0
FIXED_TYPES = {0: "TCP"}

# Profile and node names become parts of broker destinations, where "." is a
# separator; URL-encoding (%2E) is how the design lets them carry one anyway.
_NAME_RE = re.compile(r"(?:[A-Za-z0-9_\-]|%[0-9A-Fa-f]{2})+")
_NAME_ALLOWED = "letters, digits, '_', '-' and %XX escapes (no '.')"
_HOST_RE = re.compile(r"[\w.\-]+")
_ENDPOINT_RE = re.compile(r"^(tcp|tcp6|unix|ssl):")
_ENDPOINT_ALLOWED = (
    "a port number 1..65535 or an endpoint string starting with tcp:, tcp6:, unix: or ssl: "
    "(e.g. tcp:1234:interface=127.0.0.1)"
)
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
_BOOL_ALLOWED = "true, false, yes, no, 1, 0"
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")

#: List profiles: ``socketeer.<kind>.<profile>[.<entry>].<field>``, referenced by
#: ``socketeer.sourcesink.<id>.<kind>=<profile>[,<profile>...]`` (see socketeer/policy.py).
POLICY_FIELDS = {
    "accesslist": ("host",),
    "whitelist": ("cluster", "node", "host", "port"),
    "blacklist": ("cluster", "node", "host", "port"),
    "maplist": ("cluster", "node", "orghost", "orgport", "maphost", "mapport"),
}


class ConfigError(Exception):
    """A configuration problem, located as precisely as the file allows."""

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        line: int | None = None,
        key: str | None = None,
        allowed: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem
        self.allowed = allowed
        where = path if line is None else f"{path}:{line}"
        text = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ProxyConfig:
    """What a source without fixedHost serves on its one listener (a mixed SOCKS/HTTP port)."""

    socks4: bool
    socks5: bool
    http: bool
    users: Mapping[str, Secret] | None  # None: no authentication required
    handshake_timeout: float
    idle_timeout: float  # 0: none


@dataclass(frozen=True)
class BrokerConfig:
    """The in-process STOMP broker; ``users`` empty means any login is accepted."""

    enabled: bool
    listen: str | None  # None: messagingserverport=none (TLS listener only)
    max_frame_size: int
    users: Mapping[str, Secret]
    tls: BrokerTLSConfig | None = None
    #: login -> the destination prefixes it may use (absent: all destinations).
    destinations: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )


@dataclass(frozen=True)
class SourceSinkConfig:
    """One ``socketeer.sourcesink.<id>`` profile: a source, a spawning sink, or both."""

    id: str
    clustername: str
    nodename: str
    channel: ChannelSpec
    serverport: str | None
    spawning_sink: bool
    peernode: str | None
    fixed_host: str | None
    fixed_port: int | None
    fixed_type: int
    connect_timeout: float
    window: int
    proxy: ProxyConfig | None = None  # a source without fixedHost: a SOCKS/HTTP proxy port
    policy: Policy = EMPTY_POLICY  # its access list, whitelist, blacklist and maplist
    grace_period: float = 60.0  # streams wait this long for a silent peer / lost broker
    ping_interval: float = 5.0  # ping a peer node silent for this long

    @property
    def is_source(self) -> bool:
        """A sourcesink with a listener accepts local clients, so it is a source."""
        return self.serverport is not None


@dataclass(frozen=True)
class Config:
    """Everything one Socketeer process runs, plus the warnings found while reading it."""

    path: str
    broker: BrokerConfig
    sourcesinks: tuple[SourceSinkConfig, ...]
    warnings: tuple[str, ...]
    require_encryption: bool = False  # refuse a channel with neither TLS nor codekey
    seal_max_age: float = 300.0  # seconds; sealed messages older (or newer) are dropped
    status: StatusConfig | None = None  # the status server (/metrics, /status); None: off


@dataclass(frozen=True)
class _Entry:
    key: str
    value: str
    line: int


class _Props:
    """Key lookups that know where each key was, so errors can point at it."""

    def __init__(self, path: str, entries: Mapping[str, _Entry]) -> None:
        self.path = path
        self.entries = entries

    def error(self, key: str, problem: str, allowed: str | None = None) -> ConfigError:
        entry = self.entries.get(key)
        return ConfigError(
            self.path, problem, line=entry.line if entry else None, key=key, allowed=allowed
        )

    def line(self, key: str) -> int | None:
        entry = self.entries.get(key)
        return entry.line if entry else None

    def get(self, key: str) -> str | None:
        entry = self.entries.get(key)
        return None if entry is None else entry.value.strip()

    def required(self, key: str, allowed: str, why: str = "required key is missing") -> str:
        value = self.get(key)
        if value is None:
            raise ConfigError(self.path, why, key=key, allowed=allowed)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise self.error(key, f"invalid boolean {value!r}", _BOOL_ALLOWED)

    def integer(self, key: str, default: int, low: int, high: int, unit: str = "") -> int:
        value = self.get(key)
        if value is None:
            return default
        allowed = f"an integer {low}..{high}{unit}"
        if not (value.isascii() and value.isdigit()):
            raise self.error(key, f"invalid integer {value!r}", allowed)
        number = int(value)
        if not low <= number <= high:
            raise self.error(key, f"{number} is out of range", allowed)
        return number

    def name(self, key: str) -> str:
        value = self.optional_name(key)
        if value is None:
            raise ConfigError(self.path, "required key is missing", key=key, allowed=_NAME_ALLOWED)
        return value

    def optional_name(self, key: str) -> str | None:
        value = self.get(key)
        if value is not None and not _NAME_RE.fullmatch(value):
            raise self.error(key, f"invalid name {value!r}", _NAME_ALLOWED)
        return value


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse the configuration file at *path*; raise ConfigError on any problem."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        reason = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
        raise ConfigError(name, f"cannot read configuration: {reason}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Java's Properties.load() reads ISO-8859-1, so older files may be Latin-1.
        text = data.decode("latin-1")
    return parse_config(text, name)


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse properties *text*; *path* is only used in messages."""
    warnings: list[str] = []
    entries = _read_entries(text, path, warnings)
    props = _Props(path, entries)

    ids: list[str] = []
    for entry in entries.values():
        sid = _sourcesink_id(entry.key)
        if sid is not None and sid not in ids:
            ids.append(sid)

    users: dict[str, Secret] = {}
    for entry in entries.values():
        key = entry.key
        if key in GENERAL_KEYS:
            continue
        if key.startswith(USER_PREFIX) and len(key) > len(USER_PREFIX):
            from socketeer.config.security import broker_passcode

            users[key[len(USER_PREFIX) :]] = broker_passcode(props, key)
            continue
        if key.startswith(USER_DEST_PREFIX) and len(key) > len(USER_DEST_PREFIX):
            continue  # checked with the broker (socketeer/security.py)
        if is_status_user_key(key):
            continue  # checked with the status server (socketeer/opsconfig.py)
        if _auth_entry(props, key) is not None or _policy_entry(props, key) is not None:
            continue
        sid = _sourcesink_id(key)
        if sid is not None:
            if not _NAME_RE.fullmatch(sid):
                raise props.error(key, f"invalid sourcesink id {sid!r}", _NAME_ALLOWED)
            continue
        warnings.append(_unknown_key_warning(path, entry, ids))

    broker = _broker(props, users, warnings)
    sourcesinks = tuple(_sourcesink(props, sid, warnings) for sid in ids)
    sourcesinks = _with_policies(props, sourcesinks, _policy_profiles(props), warnings)
    _check_unique(props, broker, sourcesinks)
    status = status_config(props, broker, sourcesinks, warnings)
    if not broker.enabled and not sourcesinks:
        raise ConfigError(
            path,
            "nothing to run: no sourcesink is configured and the broker is disabled",
            allowed=f"set {K_ENABLED}=true or configure a {SOURCESINK}<id>.*",
        )
    from socketeer.config.security import general_security

    security = general_security(props, sourcesinks)
    return Config(path, broker, sourcesinks, tuple(warnings), **security, status=status)


def _read_entries(text: str, path: str, warnings: list[str]) -> dict[str, _Entry]:
    """Key -> entry, in order of first appearance; a repeated key's last value wins, as in Java."""
    entries: dict[str, _Entry] = {}
    line = 1
    elements = javaproperties.parse(text)
    while True:
        try:
            element = next(elements)
        except StopIteration:
            break
        except javaproperties.InvalidUEscapeError as e:
            raise ConfigError(
                path, str(e), line=line, allowed="\\uXXXX with four hex digits"
            ) from None
        if isinstance(element, javaproperties.KeyValue):
            previous = entries.get(element.key)
            if previous is not None:
                warnings.append(
                    f"{path}:{line}: duplicate key {element.key} "
                    f"(also on line {previous.line}); the last value wins"
                )
            entries[element.key] = _Entry(element.key, element.value, line)
        line += len(_LINE_BREAK_RE.findall(element.source))
    return entries


def _auth_entry(props: _Props, key: str) -> tuple[str, str] | None:
    """``socketeer.authorisation.<profile>.user.<name>`` -> (profile, name), else None."""
    if not key.startswith(AUTH):
        return None
    profile, dot, rest = key[len(AUTH) :].partition(".")
    kind, dot2, name = rest.partition(".")
    if not (dot and dot2 and kind == "user" and name):
        return None
    if not _NAME_RE.fullmatch(profile):
        raise props.error(key, f"invalid authorisation profile name {profile!r}", _NAME_ALLOWED)
    return profile, name


def _auth_users(props: _Props, profile_key: str) -> Mapping[str, Secret] | None:
    """The users of the authorisation profile(s) named by *profile_key* (comma-separated)."""
    from socketeer.config.security import secret_value
    from socketeer.passwords import BadPasswordHash, parse_stored

    names = props.get(profile_key)
    if names is None:
        return None
    users: dict[str, Secret] = {}
    for profile in (p.strip() for p in names.split(",")):
        found = False
        for entry in props.entries.values():
            parsed = _auth_entry(props, entry.key)
            if parsed is None or parsed[0] != profile:
                continue
            found = True
            value = secret_value(props, entry.key, entry.value, "password")
            try:
                parse_stored(value)
            except BadPasswordHash as e:
                raise props.error(entry.key, "malformed password hash", str(e)) from None
            users[parsed[1]] = Secret(value)
        if not found:
            raise props.error(
                profile_key,
                f"no users in authorisation profile {profile!r}",
                f"define {AUTH}{profile}.user.<name>=<password or pbkdf2-sha256 hash>",
            )
    return MappingProxyType(users)


def _sourcesink_id(key: str) -> str | None:
    """The ``<id>`` of a known ``socketeer.sourcesink.<id>.<key>``, else None."""
    if not key.startswith(SOURCESINK):
        return None
    sid, dot, sub = key[len(SOURCESINK) :].partition(".")
    if not dot or sub not in SOURCESINK_KEYS or not sid:
        return None
    return sid


# -- policy profiles: access lists, whitelists, blacklists, maplists (socketeer/policy.py) ----


def _policy_entry(props: _Props, key: str) -> tuple[str, str, str, str] | None:
    """``socketeer.<kind>.<profile>[.<entry>].<field>`` -> (kind, profile, entry, field).

    None for anything else, so that it is reported as an unknown key.
    """
    parts = key.split(".")
    if len(parts) not in (4, 5) or parts[0] != "socketeer" or parts[1] not in POLICY_FIELDS:
        return None
    kind, profile, fieldname = parts[1], parts[2], parts[-1]
    entry = parts[3] if len(parts) == 5 else ""
    if fieldname not in POLICY_FIELDS[kind]:
        return None
    if not _NAME_RE.fullmatch(profile):
        raise props.error(key, f"invalid {kind} profile name {profile!r}", _NAME_ALLOWED)
    if len(parts) == 5 and not _NAME_RE.fullmatch(entry):
        raise props.error(key, f"invalid {kind} entry name {entry!r}", _NAME_ALLOWED)
    return kind, profile, entry, fieldname


def _suggest_policy(kind: str, parts: list[str]) -> str:
    fields = POLICY_FIELDS[kind]
    any_field = f"<{'|'.join(fields)}>"
    if len(parts) == 3:
        return f"socketeer.{kind}.{parts[2]}.{any_field}"
    head = parts[2:4] if len(parts) >= 5 else parts[2:3]
    matches = difflib.get_close_matches(parts[-1].lower(), fields, n=1, cutoff=0.6)
    return ".".join(["socketeer", kind, *head, matches[0] if matches else any_field])


def _policy_list(
    props: _Props, key: str, what: str, parse, allowed: str, *, star: bool = True
) -> tuple:
    """A comma-separated value, every item parsed; ``*`` alone means any (an empty tuple)."""
    value = props.get(key) or ""
    items = [item.strip() for item in value.split(",")]
    if star and items == ["*"]:
        return ()
    if not all(items):
        raise props.error(key, f"empty item in {value!r}", allowed)
    parsed = []
    for item in items:
        try:
            parsed.append(parse(item))
        except ValueError as e:
            raise props.error(key, f"invalid {what} {item!r}: {e}", allowed) from None
    return tuple(parsed)


def _policy_names(props: _Props, key: str) -> tuple[str, ...]:
    def name(text: str) -> str:
        if text != "*" and not _NAME_RE.fullmatch(text):
            raise ValueError("not a cluster or node name")
        return text

    names = _policy_list(props, key, "name", name, _NAME_ALLOWED + "; comma-separated, or *")
    return () if "*" in names else names


def _policy_rule(props: _Props, kind: str, name: str, keys: Mapping[str, str]) -> Rule | MapRule:
    """One entry of a profile; ``keys`` maps its fields to their full keys."""

    def values(fieldname: str, what: str, parse, allowed: str) -> tuple:
        key = keys.get(fieldname)
        return () if key is None else _policy_list(props, key, what, parse, allowed)

    clusters = _policy_names(props, keys["cluster"]) if "cluster" in keys else ()
    nodes = _policy_names(props, keys["node"]) if "node" in keys else ()
    if kind != "maplist":
        parse_host, hosts_allowed = parse_host_pattern, HOST_PATTERN_ALLOWED
        if kind == "accesslist":
            parse_host, hosts_allowed = _client_pattern, CLIENT_PATTERN_ALLOWED
        return Rule(
            kind,
            name,
            hosts=values("host", "host", parse_host, hosts_allowed),
            ports=values("port", "port", parse_port_range, PORT_PATTERN_ALLOWED),
            clusters=clusters,
            nodes=nodes,
        )
    if "maphost" not in keys and "mapport" not in keys:
        first = min(keys.values(), key=lambda k: props.line(k) or 0)
        raise props.error(
            first,
            f"maplist entry {name!r} says where from but not where to",
            f"set socketeer.maplist.{name}.maphost and/or .mapport",
        )
    maphost = mapport = None
    if "maphost" in keys:
        value = props.get(keys["maphost"]) or ""
        try:
            maphost = parse_map_host(value)
        except ValueError as e:
            message = f"invalid maphost {value!r}: {e}"
            raise props.error(keys["maphost"], message, MAP_HOST_ALLOWED) from None
    if "mapport" in keys:
        value = props.get(keys["mapport"]) or ""
        try:
            mapport = parse_port(value)
        except ValueError as e:
            message = f"invalid mapport {value!r}: {e}"
            raise props.error(keys["mapport"], message, PORT_ALLOWED) from None
    return MapRule(
        name,
        maphost=maphost,
        mapport=mapport,
        orghosts=values("orghost", "host", parse_host_pattern, HOST_PATTERN_ALLOWED),
        orgports=values("orgport", "port", parse_port_range, PORT_PATTERN_ALLOWED),
        clusters=clusters,
        nodes=nodes,
    )


def _client_pattern(text: str):
    """Access lists match a client's address, never a name (no reverse lookups)."""
    pattern = parse_host_pattern(text)
    if pattern.kind in (HostKind.NAME, HostKind.SUFFIX):
        raise ValueError("a client is known by its address, not by a name")
    return pattern


@dataclass(frozen=True)
class _PolicyProfile:
    kind: str
    name: str  # as first written (may hold %XX escapes)
    first_key: str
    rules: tuple[Rule | MapRule, ...]


def _profile_id(name: str) -> str:
    """Profile names may be URL-encoded: ``a%2Eb`` and ``a%2eb`` are the same profile."""
    from urllib.parse import unquote

    return unquote(name)


def _policy_profiles(props: _Props) -> dict[tuple[str, str], _PolicyProfile]:
    """Every list profile in the file, its entries as rules in file order, errors raised."""
    found: dict[tuple[str, str], tuple[str, str, dict[str, dict[str, str]]]] = {}
    for entry in props.entries.values():
        parsed = _policy_entry(props, entry.key)
        if parsed is None:
            continue
        kind, profile, entry_name, fieldname = parsed
        _, _, entries = found.setdefault((kind, _profile_id(profile)), (profile, entry.key, {}))
        entries.setdefault(entry_name, {})[fieldname] = entry.key
    profiles = {}
    for (kind, pid), (profile, first_key, entries) in found.items():
        rules = tuple(
            _policy_rule(props, kind, f"{profile}.{e}" if e else profile, keys)
            for e, keys in entries.items()
        )
        profiles[(kind, pid)] = _PolicyProfile(kind, profile, first_key, rules)
    return profiles


def _with_policies(
    props: _Props,
    sourcesinks: tuple[SourceSinkConfig, ...],
    profiles: Mapping[tuple[str, str], _PolicyProfile],
    warnings: list[str],
) -> tuple[SourceSinkConfig, ...]:
    """Each sourcesink with the rules of the profiles it references, in reference order."""
    from dataclasses import replace

    used: set[tuple[str, str]] = set()
    out = []
    for ss in sourcesinks:
        lists: dict[str, tuple] = {}
        for kind, fields in POLICY_FIELDS.items():
            key = f"{SOURCESINK}{ss.id}.{kind}"
            if props.get(key) is None:
                lists[kind] = ()
                continue
            allowed = f"names of socketeer.{kind}.<profile> profiles, comma-separated"
            refs = _policy_list(props, key, "profile name", str, allowed, star=False)
            rules: list = []
            for ref in dict.fromkeys(refs):
                if not _NAME_RE.fullmatch(ref):
                    raise props.error(key, f"invalid profile name {ref!r}", _NAME_ALLOWED)
                profile = profiles.get((kind, _profile_id(ref)))
                if profile is None:
                    raise props.error(
                        key,
                        f"no {kind} profile {ref!r}",
                        f"define socketeer.{kind}.{ref}.<{'|'.join(fields)}>=...",
                    )
                used.add((kind, _profile_id(ref)))
                rules.extend(profile.rules)
            lists[kind] = tuple(rules)
        if lists["accesslist"] and not ss.is_source:
            key = f"{SOURCESINK}{ss.id}.accesslist"
            warnings.append(
                f"{props.path}:{props.line(key)}: {key} is ignored: an access list admits "
                "the clients of a source, and this sourcesink has no serverport"
            )
            lists["accesslist"] = ()
        policy = Policy(**lists)
        out.append(ss if policy.empty else replace(ss, policy=policy))
    for (kind, pid), profile in profiles.items():
        if (kind, pid) not in used:
            warnings.append(
                f"{props.path}:{props.line(profile.first_key)}: {kind} profile {profile.name} "
                f"is not used by any sourcesink (reference it with "
                f"{SOURCESINK}<id>.{kind}={profile.name})"
            )
    return tuple(out)


def _unknown_key_warning(path: str, entry: _Entry, ids: list[str]) -> str:
    """A warning for an unknown key, suggesting the nearest known one."""
    key = entry.key
    message = f"{path}:{entry.line}: unknown key {key}"
    suggestion = _suggest(key, ids)
    return f"{message}; did you mean {suggestion}?" if suggestion else message


def _suggest(key: str, ids: list[str]) -> str | None:
    """The known key *key* was probably meant to be, or None.

    Inside a known prefix only the tail is compared: the long shared prefix
    would otherwise make every key look close to every other.
    """
    parts = key.split(".")
    candidates = [*GENERAL_KEYS, f"{USER_PREFIX}<login>"]
    for sid in [*ids, parts[2]] if len(parts) >= 4 else ids:
        candidates += [f"{SOURCESINK}{sid}.{sub}" for sub in SOURCESINK_KEYS]
    folded = [c for c in candidates if c.casefold() == key.casefold()]
    if folded:
        return folded[0]
    if len(parts) >= 3 and parts[0] == "socketeer":
        kinds = difflib.get_close_matches(parts[1].lower(), list(POLICY_FIELDS), n=1, cutoff=0.8)
        if kinds:
            return _suggest_policy(kinds[0], parts)
    if key.startswith(SOURCESINK) and len(parts) >= 4:
        prefix, tail = ".".join(parts[:3]) + ".", ".".join(parts[3:])
        tails = list(SOURCESINK_KEYS)
    elif key.startswith(GENERAL):
        prefix, tail = GENERAL, key[len(GENERAL) :]
        login = tail.partition(".")[2] or "<login>"
        if tail.startswith("messagingserveruser"):
            return f"{USER_PREFIX}{login}"
        tails = [k[len(GENERAL) :] for k in GENERAL_KEYS] + [f"messagingserveruser.{login}"]
    else:
        matches = difflib.get_close_matches(key, candidates, n=1, cutoff=0.8)
        return matches[0] if matches else None
    matches = difflib.get_close_matches(tail, tails, n=1, cutoff=0.6)
    return prefix + matches[0] if matches else None


def _broker(props: _Props, users: Mapping[str, Secret], warnings: list[str]) -> BrokerConfig:
    interface = _interface(props, K_INTERFACE)
    port = props.get(K_PORT)
    if port is None:
        listen = _bare_port_endpoint(DEFAULT_BROKER_PORT, interface)
    elif port.lower() == "none":
        listen = None  # only the TLS listener (socketeer/security.py checks there is one)
    else:
        listen = _listen_endpoint(props, K_PORT, interface, K_INTERFACE, warnings)
    broker = BrokerConfig(
        enabled=props.boolean(K_ENABLED, False),
        listen=listen,
        max_frame_size=props.integer(
            K_MAXFRAME, DEFAULT_MAX_FRAME_SIZE, *MAX_FRAME_SIZE_RANGE, " (bytes)"
        ),
        users=MappingProxyType(dict(users)),
    )
    from socketeer.config.security import broker_security

    return broker_security(props, broker, interface, warnings)


def _sourcesink(props: _Props, sid: str, warnings: list[str]) -> SourceSinkConfig:
    def k(sub: str) -> str:
        return f"{SOURCESINK}{sid}.{sub}"

    clustername = props.name(k("clustername"))
    nodename = props.name(k("nodename"))

    channel_allowed = "a channel URL such as stomp://host:61626/topic?username=u&password=p"
    channel_text = props.required(k("channel"), channel_allowed)
    try:
        channel = parse_channel_url(channel_text)
    except ChannelURLError as e:
        raise props.error(k("channel"), f"invalid channel: {e}", channel_allowed) from None
    from socketeer.config.security import channel_security

    channel = channel_security(props, k("channel"), channel)  # secret references, TLS files

    serverport = None
    if props.get(k("serverport")) is not None:
        interface = _interface(props, k("serverinterface"))
        serverport = _listen_endpoint(
            props, k("serverport"), interface, k("serverinterface"), warnings
        )
    elif props.get(k("serverinterface")) is not None:
        raise props.error(
            k("serverinterface"), "serverinterface needs serverport", f"also set {k('serverport')}"
        )
    spawning = props.boolean(k("isSpawningAndResolvingSink"), False)

    if serverport is None and not spawning:
        raise ConfigError(
            props.path,
            "sourcesink is neither a source nor a sink",
            line=min(e.line for e in props.entries.values() if _sourcesink_id(e.key) == sid),
            key=f"{SOURCESINK}{sid}",
            allowed=f"set {k('serverport')} (a source) "
            f"and/or {k('isSpawningAndResolvingSink')}=true (a sink)",
        )

    peernode = props.optional_name(k("peernode"))
    if serverport is not None and peernode is None:
        raise ConfigError(
            props.path,
            "required for a source (the node name of the sink it talks to)",
            key=k("peernode"),
            allowed=_NAME_ALLOWED,
        )

    fixed_host = props.get(k("fixedHost"))
    if fixed_host is not None and not (_HOST_RE.fullmatch(fixed_host) or is_ip(fixed_host)):
        raise props.error(
            k("fixedHost"), f"invalid host {fixed_host!r}", "a host name or an IP address"
        )
    fixed_port = None
    if props.get(k("fixedPort")) is not None:
        fixed_port = props.integer(k("fixedPort"), 0, 1, 65535)
    if (fixed_host is None) != (fixed_port is None):
        given, missing = "fixedHost", "fixedPort"
        if fixed_host is None:
            given, missing = missing, given
        raise ConfigError(
            props.path,
            f"required because {given} is set (they go together)",
            key=k(missing),
            allowed=f"set both {k('fixedHost')} and {k('fixedPort')}, or neither",
        )
    proxy = None
    if serverport is not None and fixed_host is None:
        proxy = ProxyConfig(
            socks4=props.boolean(k("socks4enabled"), True),
            socks5=props.boolean(k("socks5enabled"), True),
            http=props.boolean(k("httpenabled"), True),
            users=_auth_users(props, k("authorisation")),
            handshake_timeout=_positive_float(
                props, k("handshaketimeout"), DEFAULT_HANDSHAKE_TIMEOUT
            ),
            idle_timeout=_nonnegative_float(props, k("idletimeout"), 0.0),
        )
        if not (proxy.socks4 or proxy.socks5 or proxy.http):
            raise props.error(
                k("httpenabled"),
                "a source without fixedHost serves SOCKS and/or HTTP, but all are disabled",
                f"enable one of socks4enabled, socks5enabled, httpenabled, or set {k('fixedHost')}",
            )
    fixed_type = props.integer(k("fixedType"), 0, 0, 2**31 - 1)
    if fixed_type not in FIXED_TYPES:
        raise props.error(
            k("fixedType"),
            f"unsupported fixedType {fixed_type}",
            ", ".join(f"{n} ({t})" for n, t in FIXED_TYPES.items()),
        )

    return SourceSinkConfig(
        id=sid,
        clustername=clustername,
        nodename=nodename,
        channel=channel,
        serverport=serverport,
        spawning_sink=spawning,
        peernode=peernode,
        fixed_host=fixed_host,
        fixed_port=fixed_port,
        fixed_type=fixed_type,
        connect_timeout=_positive_float(props, k("connecttimeout"), DEFAULT_CONNECT_TIMEOUT),
        window=props.integer(k("window"), DEFAULT_WINDOW, *WINDOW_RANGE, " (bytes)"),
        proxy=proxy,
        grace_period=_positive_float(props, k("graceperiod"), 60.0),
        ping_interval=_positive_float(props, k("pinginterval"), 5.0),
    )


def _positive_float(props: _Props, key: str, default: float) -> float:
    value = props.get(key)
    if value is None:
        return default
    allowed = "a number of seconds > 0, e.g. 10 or 2.5"
    try:
        number = float(value)
    except ValueError:
        raise props.error(key, f"invalid number {value!r}", allowed) from None
    if not (math.isfinite(number) and number > 0):
        raise props.error(key, f"{value} is out of range", allowed)
    return number


def _nonnegative_float(props: _Props, key: str, default: float) -> float:
    value = props.get(key)
    if value is None:
        return default
    allowed = "a number of seconds >= 0 (0 means no limit)"
    try:
        number = float(value)
    except ValueError:
        raise props.error(key, f"invalid number {value!r}", allowed) from None
    if not (math.isfinite(number) and number >= 0):
        raise props.error(key, f"{value} is out of range", allowed)
    return number


def _interface(props: _Props, key: str) -> str:
    value = props.get(key)
    if value is None:
        return DEFAULT_INTERFACE
    if not is_ip(value):
        raise props.error(
            key, f"invalid interface {value!r}", "an IP address such as 127.0.0.1, 0.0.0.0 or ::1"
        )
    return value


def _escape(text: str) -> str:
    """Escape ``\\``, ``:`` and ``=`` the way Twisted endpoint strings expect."""
    return re.sub(r"([\\:=])", r"\\\1", text)


def _bare_port_endpoint(port: int, interface: str) -> str:
    kind = "tcp6" if ":" in interface else "tcp"
    return f"{kind}:{port}:interface={_escape(interface)}"


def _endpoint_fields(description: str) -> tuple[list[str], dict[str, str]]:
    """Positional and keyword fields after the type, unescaped as Twisted's parser does."""
    fields: list[tuple[str | None, str]] = []
    name: str | None = None
    buf: list[str] = []
    for token in re.findall(r"\\.?|[:=]|[^\\:=]+", description):
        if token == ":":
            fields.append((name, "".join(buf)))
            name, buf = None, []
        elif token == "=" and name is None:
            name, buf = "".join(buf), []
        elif token.startswith("\\"):
            buf.append(token[1:])
        else:
            buf.append(token)
    fields.append((name, "".join(buf)))
    args = [value for key, value in fields[1:] if key is None]
    kwargs = {key: value for key, value in fields[1:] if key is not None}
    return args, kwargs


def _listen_endpoint(
    props: _Props, key: str, interface: str, interface_key: str, warnings: list[str]
) -> str:
    """A listener: bare port -> ``tcp:PORT:interface=...``; endpoint strings are checked."""
    value = props.required(key, _ENDPOINT_ALLOWED)
    if value.isascii() and value.isdigit():
        port = int(value)
        if not 1 <= port <= 65535:
            raise props.error(key, f"port {port} is out of range", _ENDPOINT_ALLOWED)
        return _bare_port_endpoint(port, interface)
    match = _ENDPOINT_RE.match(value)
    if not match:
        raise props.error(key, f"invalid listener {value!r}", _ENDPOINT_ALLOWED)
    if props.get(interface_key) is not None:
        warnings.append(
            f"{props.path}:{props.line(interface_key)}: {interface_key} is ignored "
            f"because {key} is an endpoint string"
        )
    kind = match.group(1)
    args, kwargs = _endpoint_fields(value)
    if kind == "unix":
        if not ((args and args[0]) or kwargs.get("address")):
            raise props.error(key, f"unix endpoint {value!r} has no path", "unix:/path/to/socket")
        return value
    port_text = kwargs.get("port", args[0] if args else None)
    if port_text is None or not (port_text.isascii() and port_text.isdigit()):
        raise props.error(
            key, f"endpoint {value!r} has no valid port", f"{kind}:PORT[:interface=ADDRESS]"
        )
    if int(port_text) > 65535:
        raise props.error(key, f"endpoint port {port_text} is out of range", "0..65535")
    if kind in ("tcp", "tcp6") and "interface" not in kwargs:
        loopback = "127.0.0.1" if kind == "tcp" else "::1"
        value = f"{value}:interface={_escape(loopback)}"
    return value


def _listen_key(endpoint: str) -> tuple[str, int | str, str] | None:
    """What two listeners would fight over: (family, port or path, interface)."""
    kind = endpoint.split(":", 1)[0]
    args, kwargs = _endpoint_fields(endpoint)
    if kind == "unix":
        return ("unix", kwargs.get("address", args[0] if args else ""), "")
    port = int(kwargs.get("port", args[0] if args else "0"))
    if port == 0:
        return None  # ephemeral ports never clash
    interface = kwargs.get("interface", "")
    return ("inet", port, interface)


def _clash(a: tuple[str, int | str, str], b: tuple[str, int | str, str]) -> bool:
    if a[:2] != b[:2]:
        return False
    wildcard = {"", "0.0.0.0", "::"}
    return a[2] == b[2] or a[2] in wildcard or b[2] in wildcard


def _check_unique(
    props: _Props, broker: BrokerConfig, sourcesinks: tuple[SourceSinkConfig, ...]
) -> None:
    nodes: dict[tuple[str, str], str] = {}
    listeners: list[tuple[tuple[str, int | str, str], str]] = []
    if broker.enabled:
        key = _listen_key(broker.listen) if broker.listen is not None else None
        if key is not None:
            listeners.append((key, K_PORT))
        key = _listen_key(broker.tls.listen) if broker.tls is not None else None
        if key is not None:
            listeners.append((key, K_SSLPORT))
    for ss in sourcesinks:
        node = (ss.clustername, ss.nodename)
        if node in nodes:
            raise props.error(
                f"{SOURCESINK}{ss.id}.nodename",
                f"node {ss.nodename!r} in cluster {ss.clustername!r} is already "
                f"used by sourcesink {nodes[node]!r}",
                "a node name that is unique within its cluster",
            )
        nodes[node] = ss.id
        if ss.serverport is None:
            continue
        key = _listen_key(ss.serverport)
        if key is None:
            continue
        for other, other_key in listeners:
            if _clash(key, other):
                raise props.error(
                    f"{SOURCESINK}{ss.id}.serverport",
                    f"listener {ss.serverport!r} clashes with {other_key}",
                    "a port not used by another listener",
                )
        listeners.append((key, f"{SOURCESINK}{ss.id}.serverport"))
