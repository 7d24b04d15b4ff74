"""``socketeer hash-password``: the pbkdf2-sha256 hash that password entries accept."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import IO

from socketeer.passwords import hash_password


def _read_password(stdin: IO[str], err: IO[str]) -> str | None:
    if stdin.isatty():
        first = getpass.getpass("Password: ", stream=err)
        if getpass.getpass("Again: ", stream=err) != first:
            print("error: the passwords differ", file=err)
            return None
        return first
    line = stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def cmd_hash_password(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    password = _read_password(sys.stdin, err)
    if password is None:
        return 1
    if not password:
        print("error: empty password", file=err)
        return 1
    print(hash_password(password, iterations=args.iterations), file=out)
    return 0
