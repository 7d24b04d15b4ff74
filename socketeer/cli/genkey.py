"""``socketeer genkey``: a strong random codekey for a channel URL, or a node identity.

``--identity`` prints a new node private key on standard output, alone, so that
``socketeer genkey --identity > si.key`` makes the file ``identity=file:si.key`` reads, and
its public key on standard error, for the peers' ``peerkeys``. ``--public`` reads a private
key on standard input and prints its public key, to find it again later. The key format
is WireGuard's (``wg genkey``, ``wg pubkey``): standard base64 of 32 bytes.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import IO


def cmd_genkey(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.identity or args.public:
        from socketeer.wire.noise import Identity, KeyFormatError

        if args.identity and args.public:
            print("error: --identity or --public, not both", file=err)
            return 2
        if args.identity:
            identity = Identity.generate()
            print(identity.to_text(), file=out)
            print(f"public key (for the peers' peerkeys): {identity.public_text()}", file=err)
            return 0
        try:
            identity = Identity.from_text(sys.stdin.readline())
        except KeyFormatError as e:
            print(f"error: {e}", file=err)
            return 1
        print(identity.public_text(), file=out)
        return 0
    if not 16 <= args.bytes <= 1024:
        print("error: --bytes must be 16..1024", file=err)
        return 2
    print(secrets.token_urlsafe(args.bytes), file=out)  # URL-safe: fits in a channel URL
    return 0
