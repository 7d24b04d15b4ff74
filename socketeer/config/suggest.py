"""Unknown keys: the warning for each, with the known key it was probably meant to be.

An unknown key is only a warning, because a file written for a newer Socketeer should
still start; the suggestion makes a typo visible and fixable in one read.
"""

from __future__ import annotations

import difflib

from socketeer.config.keys import (
    GENERAL,
    GENERAL_KEYS,
    POLICY_FIELDS,
    SOURCESINK,
    SOURCESINK_KEYS,
    USER_PREFIX,
)
from socketeer.config.properties import Entry

__all__ = ["suggest", "unknown_key_warning"]


def unknown_key_warning(path: str, entry: Entry, ids: list[str]) -> str:
    """A warning for an unknown key, suggesting the nearest known one.

    *ids* are the file's sourcesink ids, so a misspelt key of one is matched against its keys.
    """
    key = entry.key
    message = f"{path}:{entry.line}: unknown key {key}"
    suggestion = suggest(key, ids)
    return f"{message}; did you mean {suggestion}?" if suggestion else message


def suggest(key: str, ids: list[str]) -> str | None:
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


def _suggest_policy(kind: str, parts: list[str]) -> str:
    """A list profile key of *kind*, its field the nearest to the one written."""
    fields = POLICY_FIELDS[kind]
    any_field = f"<{'|'.join(fields)}>"
    if len(parts) == 3:
        return f"socketeer.{kind}.{parts[2]}.{any_field}"
    head = parts[2:4] if len(parts) >= 5 else parts[2:3]
    matches = difflib.get_close_matches(parts[-1].lower(), fields, n=1, cutoff=0.6)
    return ".".join(["socketeer", kind, *head, matches[0] if matches else any_field])
