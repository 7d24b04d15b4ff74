"""Secret references: a password, passcode or codekey kept out of the properties file.

Wherever the configuration takes a secret (a channel's ``password`` and ``codekey``, a
broker user's passcode, an authorisation profile user's password) the value may be:

``env:NAME``
    the value of environment variable ``NAME`` (which must be set and not empty);
``file:PATH``
    the content of file ``PATH`` without its trailing line break (at most 64 KiB; a
    relative path is relative to the properties file's directory);
``literal:TEXT``
    ``TEXT`` itself, for a secret that really starts with ``env:``, ``file:`` or
    ``literal:``;

and anything else is the secret itself, as before. Errors name the variable or the file
and never the secret. Resolution happens once, when the configuration is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from socketeer.config.files import FileReadError, read_capped, resolve_path

__all__ = ["SecretRefError", "is_reference", "resolve_secret"]

ENV = "env:"
FILE = "file:"
LITERAL = "literal:"
MAX_FILE = 64 * 1024


class SecretRefError(ValueError):
    """A secret reference cannot be resolved; the message never contains a secret."""


def is_reference(value: str) -> bool:
    return value.startswith((ENV, FILE, LITERAL))


def resolve_secret(
    value: str, *, base_dir: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """The secret ``value`` stands for (see the module docstring)."""
    if value.startswith(LITERAL):
        return value[len(LITERAL) :]
    if value.startswith(ENV):
        name = value[len(ENV) :]
        if not name:
            raise SecretRefError("env: needs a variable name, e.g. env:SOCKETEER_CODEKEY")
        env = os.environ if environ is None else environ
        secret = env.get(name)
        if secret is None:
            raise SecretRefError(f"environment variable {name} is not set")
        if not secret:
            raise SecretRefError(f"environment variable {name} is empty")
        return secret
    if value.startswith(FILE):
        path = value[len(FILE) :]
        if not path:
            raise SecretRefError("file: needs a path, e.g. file:/etc/socketeer/codekey")
        path = resolve_path(path, base_dir)
        try:
            data = read_capped(path, MAX_FILE, "secret file")
        except FileReadError as e:
            raise SecretRefError(str(e)) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretRefError(f"secret file {path} is not UTF-8 text") from None
        if text.endswith("\n"):
            text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
        if not text:
            raise SecretRefError(f"secret file {path} is empty")
        return text
    return value
