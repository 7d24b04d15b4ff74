"""``socketeer genkey``: a strong random codekey for a channel URL."""

from __future__ import annotations

import argparse
import secrets
from typing import IO


def cmd_genkey(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if not 16 <= args.bytes <= 1024:
        print("error: --bytes must be 16..1024", file=err)
        return 2
    print(secrets.token_urlsafe(args.bytes), file=out)  # URL-safe: fits in a channel URL
    return 0
