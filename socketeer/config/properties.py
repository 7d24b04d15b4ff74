r"""The ``.properties`` file read into located entries, and typed values read from them.

Values follow Java rules (comments, ``=``/``:``/space separators, ``\`` continuation
lines, ``\uXXXX`` escapes) and surrounding whitespace is stripped. Because Java unescapes
``\:`` to ``:``, an endpoint string that needs a literal ``\:`` (an IPv6 interface) must
double the backslash in the file::

    socketeer.general.messagingserverport=tcp6:61626:interface=\\:\\:1

Every entry remembers its line, so each reader below fails with a ConfigError that points
at the key being read.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import javaproperties

from socketeer.config.files import resolve_path
from socketeer.config.model import ConfigError
from socketeer.config.secretref import SecretRefError, resolve_secret

__all__ = [
    "NAME_ALLOWED",
    "Entry",
    "Properties",
    "is_name",
    "read_entries",
    "read_text",
]

# Profile and node names become parts of broker destinations, where "." is a
# separator; URL-encoding (%2E) is how the design lets them carry one anyway.
_NAME_RE = re.compile(r"(?:[A-Za-z0-9_\-]|%[0-9A-Fa-f]{2})+")
NAME_ALLOWED = "letters, digits, '_', '-' and %XX escapes (no '.')"
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
_BOOL_ALLOWED = "true, false, yes, no, 1, 0"
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")


def is_name(text: str) -> bool:
    """*text* may be a cluster, node, sourcesink or profile name (see NAME_ALLOWED)."""
    return _NAME_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class Entry:
    """One key as the file gives it: its raw value and the line it starts on."""

    key: str
    value: str
    line: int


def read_text(path: str) -> str:
    """The text of the properties file at *path*; ConfigError if it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        reason = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
        raise ConfigError(path, f"cannot read configuration: {reason}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Java's Properties.load() reads ISO-8859-1, so older files may be Latin-1.
        return data.decode("latin-1")


def read_entries(text: str, path: str, warnings: list[str]) -> dict[str, Entry]:
    """Key -> entry, in order of first appearance; a repeated key's last value wins, as in Java."""
    entries: dict[str, Entry] = {}
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
            entries[element.key] = Entry(element.key, element.value, line)
        line += len(_LINE_BREAK_RE.findall(element.source))
    return entries


class Properties:
    """Key lookups that know where each key was, so errors can point at it.

    *path* is only used in messages and to resolve relative file names; ``<...>``
    (text that came from no file) resolves nothing.
    """

    def __init__(self, path: str, entries: Mapping[str, Entry]) -> None:
        self.path = path
        self.entries = entries

    def error(self, key: str, problem: str, allowed: str | None = None) -> ConfigError:
        """A ConfigError located at *key* (its line, when the file has it)."""
        entry = self.entries.get(key)
        return ConfigError(
            self.path, problem, line=entry.line if entry else None, key=key, allowed=allowed
        )

    def line(self, key: str) -> int | None:
        entry = self.entries.get(key)
        return entry.line if entry else None

    def get(self, key: str) -> str | None:
        """The stripped value of *key*, or None when the file does not set it."""
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

    def positive_float(self, key: str, default: float) -> float:
        """Seconds > 0 (a timeout or interval that must elapse)."""
        return self._seconds(key, default, zero_allowed=False)

    def nonnegative_float(self, key: str, default: float) -> float:
        """Seconds >= 0, where 0 means no limit."""
        return self._seconds(key, default, zero_allowed=True)

    def _seconds(self, key: str, default: float, *, zero_allowed: bool) -> float:
        value = self.get(key)
        if value is None:
            return default
        if zero_allowed:
            allowed = "a number of seconds >= 0 (0 means no limit)"
        else:
            allowed = "a number of seconds > 0, e.g. 10 or 2.5"
        try:
            number = float(value)
        except ValueError:
            raise self.error(key, f"invalid number {value!r}", allowed) from None
        if not (math.isfinite(number) and (number > 0 or (zero_allowed and number == 0))):
            raise self.error(key, f"{value} is out of range", allowed)
        return number

    def name(self, key: str) -> str:
        value = self.optional_name(key)
        if value is None:
            raise ConfigError(self.path, "required key is missing", key=key, allowed=NAME_ALLOWED)
        return value

    def optional_name(self, key: str) -> str | None:
        value = self.get(key)
        if value is not None and not is_name(value):
            raise self.error(key, f"invalid name {value!r}", NAME_ALLOWED)
        return value

    @property
    def base_dir(self) -> str | None:
        """The directory relative file names are taken from: the properties file's."""
        if self.path.startswith("<"):
            return None
        return os.path.dirname(os.path.abspath(self.path))

    def file_path(self, value: str) -> str:
        """A file name given in the configuration, relative to the properties file."""
        return resolve_path(value, self.base_dir)

    def secret(self, key: str, value: str, what: str = "secret") -> str:
        """*value* (read at *key*) with an ``env:``/``file:``/``literal:`` reference resolved."""
        try:
            return resolve_secret(value, base_dir=self.base_dir)
        except SecretRefError as e:
            raise self.error(key, f"cannot read the {what}: {e}") from None
