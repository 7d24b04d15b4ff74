"""Authorisation profiles: ``socketeer.authorisation.<profile>.user.<name>``, a proxy's users.

A proxy source names its profiles with ``socketeer.sourcesink.<id>.authorisation``; each
user's password may be a secret reference or a pbkdf2 hash (``socketeer hash-password``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from socketeer.config.keys import AUTH
from socketeer.config.properties import NAME_ALLOWED, Properties, is_name
from socketeer.passwords import BadPasswordHash, parse_stored
from socketeer.secret import Secret

__all__ = ["auth_entry", "auth_users"]


def auth_entry(props: Properties, key: str) -> tuple[str, str] | None:
    """``socketeer.authorisation.<profile>.user.<name>`` -> (profile, name), else None."""
    if not key.startswith(AUTH):
        return None
    profile, dot, rest = key[len(AUTH) :].partition(".")
    kind, dot2, name = rest.partition(".")
    if not (dot and dot2 and kind == "user" and name):
        return None
    if not is_name(profile):
        raise props.error(key, f"invalid authorisation profile name {profile!r}", NAME_ALLOWED)
    return profile, name


def auth_users(props: Properties, profile_key: str) -> Mapping[str, Secret] | None:
    """The users of the authorisation profile(s) named by *profile_key* (comma-separated).

    None when *profile_key* is not set: the proxy asks no one for a password.
    """
    names = props.get(profile_key)
    if names is None:
        return None
    users: dict[str, Secret] = {}
    for profile in (p.strip() for p in names.split(",")):
        found = False
        for entry in props.entries.values():
            parsed = auth_entry(props, entry.key)
            if parsed is None or parsed[0] != profile:
                continue
            found = True
            value = props.secret(entry.key, entry.value, "password")
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
