"""Unknown keys: the known key each was probably meant to be."""

from __future__ import annotations

import pytest

from socketeer.config.keys import (
    GENERAL_KEYS,
    SOURCESINK_KEYS,
    STATUS_KEYS,
    is_status_user_key,
    sourcesink_id,
)
from socketeer.config.properties import Entry
from socketeer.config.suggest import suggest, unknown_key_warning


@pytest.mark.parametrize(
    "key,ids,expected",
    [
        ("socketeer.general.messagingserverenable", [], "socketeer.general.messagingserverenabled"),
        ("socketeer.general.MessagingServerPort", [], "socketeer.general.messagingserverport"),
        ("socketeer.sourcesink.0.nodname", ["0"], "socketeer.sourcesink.0.nodename"),
        ("socketeer.sourcesink.7.peernod", ["0"], "socketeer.sourcesink.7.peernode"),
        ("socketeer.whitelst.a.hst", [], "socketeer.whitelist.a.host"),
        (
            "socketeer.general.messagingserveruser",
            [],
            "socketeer.general.messagingserveruser.<login>",
        ),
        ("completely.different", [], None),
    ],
)
def test_suggest(key: str, ids: list[str], expected: str | None) -> None:
    assert suggest(key, ids) == expected


def test_unknown_key_warning() -> None:
    entry = Entry("socketeer.sourcesink.0.nodname", "x", 3)
    assert unknown_key_warning("p", entry, ["0"]) == (
        "p:3: unknown key socketeer.sourcesink.0.nodname; "
        "did you mean socketeer.sourcesink.0.nodename?"
    )
    assert unknown_key_warning("p", Entry("zzz", "", 1), []) == "p:1: unknown key zzz"


def test_key_classifiers() -> None:
    assert sourcesink_id("socketeer.sourcesink.a%2Eb.nodename") == "a%2Eb"
    assert sourcesink_id("socketeer.sourcesink.a.unknown") is None
    assert sourcesink_id("socketeer.sourcesink..nodename") is None
    assert is_status_user_key("socketeer.general.statusserveruser.ops")
    assert not is_status_user_key("socketeer.general.statusserveruser.")
    assert set(STATUS_KEYS) <= set(GENERAL_KEYS)
    assert "window" in SOURCESINK_KEYS
