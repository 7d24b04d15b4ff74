"""The small files a configuration names (secrets, certificates, keys): read with a size cap.

A cap keeps a wrong path (a device, a large log) from stalling start-up or filling memory.
One reader, so every such file is refused the same way, and errors name the file, never
its content.
"""

from __future__ import annotations

import os

__all__ = ["FileReadError", "read_capped", "resolve_path"]


class FileReadError(ValueError):
    """A named file cannot be read or is too large; the message names the file only."""


def read_capped(path: str, limit: int, what: str) -> bytes:
    """The content of *path* (at most *limit* bytes); *what* names the file in errors."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise FileReadError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise FileReadError(f"{what} {path} is larger than {limit} bytes")
    return data


def resolve_path(path: str, base_dir: str | None) -> str:
    """*path* taken relative to *base_dir* (the properties file's directory) unless absolute.

    Relative paths follow the file that names them, not the daemon's working directory,
    so a configuration can be moved together with its secrets and certificates.
    """
    if base_dir is not None and not os.path.isabs(path):
        return os.path.join(base_dir, path)
    return path
