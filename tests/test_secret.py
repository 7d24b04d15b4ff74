"""Secret: the wrapped value is reachable only as ``.value``, never through repr or str."""

from __future__ import annotations

import dataclasses

import pytest

from socketeer.secret import Secret


def test_secret_never_shows_its_value() -> None:
    secret = Secret("hunter2")
    assert secret.value == "hunter2"
    assert repr(secret) == str(secret) == "Secret('***')"
    assert "hunter2" not in f"{secret} {[secret]} {ValueError(secret)!r}"


def test_secrets_compare_by_value_and_are_frozen() -> None:
    assert Secret("a") == Secret("a") != Secret("b")
    assert hash(Secret("a")) == hash(Secret("a"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Secret("a").value = "b"  # type: ignore[misc]
