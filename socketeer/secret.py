"""Secret: a password or key that never shows in a repr, a log line or a traceback.

Configuration values that are credentials (channel passwords and codekeys, proxy users'
passwords, the broker's users) are wrapped in a Secret as soon as they are read, so that
printing a settings object, a ChannelSpec or an exception that holds one cannot leak it.
Code that needs the value asks for ``.value`` explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Secret"]


@dataclass(frozen=True)
class Secret:
    """A password or key that must never leak into a repr, a log line or a traceback."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__
