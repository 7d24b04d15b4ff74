"""List profiles: access lists, whitelists, blacklists and maplists, and who uses them.

``socketeer.<kind>.<profile>[.<entry>].<field>`` keys define a profile's rules (see
:mod:`socketeer.policy` for what they mean); ``socketeer.sourcesink.<id>.<kind>`` names the
profiles a sourcesink applies, in order. A profile no sourcesink uses is a warning, a
reference to a missing one an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import unquote

from socketeer.config.keys import POLICY_FIELDS, SOURCESINK
from socketeer.config.model import SourceSinkConfig
from socketeer.config.properties import NAME_ALLOWED, Properties, is_name
from socketeer.policy import (
    CLIENT_PATTERN_ALLOWED,
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

__all__ = ["PolicyProfile", "policy_entry", "policy_profiles", "with_policies"]


def policy_entry(props: Properties, key: str) -> tuple[str, str, str, str] | None:
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
    if not is_name(profile):
        raise props.error(key, f"invalid {kind} profile name {profile!r}", NAME_ALLOWED)
    if len(parts) == 5 and not is_name(entry):
        raise props.error(key, f"invalid {kind} entry name {entry!r}", NAME_ALLOWED)
    return kind, profile, entry, fieldname


def _policy_list(
    props: Properties, key: str, what: str, parse, allowed: str, *, star: bool = True
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


def _policy_names(props: Properties, key: str) -> tuple[str, ...]:
    def name(text: str) -> str:
        if text != "*" and not is_name(text):
            raise ValueError("not a cluster or node name")
        return text

    names = _policy_list(props, key, "name", name, NAME_ALLOWED + "; comma-separated, or *")
    return () if "*" in names else names


def _policy_rule(
    props: Properties, kind: str, name: str, keys: Mapping[str, str]
) -> Rule | MapRule:
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

    def destination(fieldname: str, parse, allowed: str):
        """The parsed ``maphost`` or ``mapport``, or None when the entry does not set it."""
        if fieldname not in keys:
            return None
        value = props.get(keys[fieldname]) or ""
        try:
            return parse(value)
        except ValueError as e:
            message = f"invalid {fieldname} {value!r}: {e}"
            raise props.error(keys[fieldname], message, allowed) from None

    return MapRule(
        name,
        maphost=destination("maphost", parse_map_host, MAP_HOST_ALLOWED),
        mapport=destination("mapport", parse_port, PORT_ALLOWED),
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
class PolicyProfile:
    """A profile's rules, and the key it was first written at (to point warnings there)."""

    kind: str
    name: str  # as first written (may hold %XX escapes)
    first_key: str
    rules: tuple[Rule | MapRule, ...]


def _profile_id(name: str) -> str:
    """Profile names may be URL-encoded: ``a%2Eb`` and ``a%2eb`` are the same profile."""
    return unquote(name)


def policy_profiles(props: Properties) -> dict[tuple[str, str], PolicyProfile]:
    """Every list profile in the file, its entries as rules in file order, errors raised."""
    found: dict[tuple[str, str], tuple[str, str, dict[str, dict[str, str]]]] = {}
    for entry in props.entries.values():
        parsed = policy_entry(props, entry.key)
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
        profiles[(kind, pid)] = PolicyProfile(kind, profile, first_key, rules)
    return profiles


def with_policies(
    props: Properties,
    sourcesinks: tuple[SourceSinkConfig, ...],
    profiles: Mapping[tuple[str, str], PolicyProfile],
    warnings: list[str],
) -> tuple[SourceSinkConfig, ...]:
    """Each sourcesink with the rules of the profiles it references, in reference order."""
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
                if not is_name(ref):
                    raise props.error(key, f"invalid profile name {ref!r}", NAME_ALLOWED)
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
