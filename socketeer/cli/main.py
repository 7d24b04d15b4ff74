"""The ``socketeer`` command: its parser, and the entry point that runs one subcommand.

``twistd socketeer -c FILE`` runs a configuration; this command is the toolbox around it,
one module per subcommand::

    socketeer check FILE                 validate FILE, print it resolved (secrets masked)
    socketeer genkey [--identity]        a strong random codekey (or a node identity)
    socketeer hash-password              a pbkdf2-sha256$... hash for a password entry
    socketeer status [URL]               the status endpoint, as tables in the terminal
    socketeer connect -c FILE HOST PORT  one stream through the cluster on stdin/stdout
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import IO

from socketeer import __version__
from socketeer.config.defaults import DEFAULT_STATUS_URL
from socketeer.passwords import DEFAULT_ITERATIONS

__all__ = ["main"]


# Each subcommand's module is imported only when that command runs: ``connect`` builds a
# whole node (the service tree, Twisted's reactor) and ``check`` the configuration reader,
# and ``genkey`` should not wait for either.


def _check(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from socketeer.cli.check import cmd_check

    return cmd_check(args, out, err)


def _genkey(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from socketeer.cli.genkey import cmd_genkey

    return cmd_genkey(args, out, err)


def _hash_password(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from socketeer.cli.hash_password import cmd_hash_password

    return cmd_hash_password(args, out, err)


def _status(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from socketeer.cli.status import cmd_status

    return cmd_status(args, out, err)


def _connect(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from socketeer.cli.connect import cmd_connect

    return cmd_connect(args, out, err)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="socketeer",
        description="Tools for Socketeer, the TCP tunnel over a STOMP broker. "
        "Run a configuration with: twistd -n socketeer -c FILE",
    )
    parser.add_argument("--version", action="version", version=f"socketeer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "check",
        help="validate a properties file and print it resolved",
        description="Validate FILE and print the configuration it resolves to (defaults "
        "filled in, secrets masked). Errors and warnings name file:line. Exit status 0 "
        "when it would run, 1 when not.",
    )
    p.add_argument("config", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and warnings")
    p.add_argument("--strict", action="store_true", help="warnings fail the check too")
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "genkey",
        help="print a strong random codekey, or a node identity",
        description="Print a random key for a channel's codekey= parameter (URL-safe "
        "base64 of --bytes random bytes); with --identity, a node's private key for "
        "identity= (its public key, for the peers' peerkeys=, goes to standard error).",
    )
    p.add_argument("--bytes", type=int, default=32, help="random bytes (default 32)")
    p.add_argument(
        "--identity",
        action="store_true",
        help="a node identity: the private key on stdout, its public key on stderr",
    )
    p.add_argument(
        "--public",
        action="store_true",
        help="read a node private key on stdin and print its public key",
    )
    p.set_defaults(func=_genkey)

    p = sub.add_parser(
        "hash-password",
        help="print a pbkdf2-sha256 hash of a password",
        description="Read a password (prompted twice on a terminal, else the first line of "
        "standard input) and print the pbkdf2-sha256$... hash that authorisation users, "
        "broker users and status server users accept in place of the password.",
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"default {DEFAULT_ITERATIONS}",
    )
    p.set_defaults(func=_hash_password)

    p = sub.add_parser(
        "status",
        help="show the status endpoint in the terminal",
        description="Fetch a running Socketeer's /status and show its nodes, peers and "
        f"streams. URL defaults to the status server of -c FILE, else {DEFAULT_STATUS_URL}. "
        "Credentials: http://user:pass@host:port/ or --user (password from "
        "$SOCKETEER_STATUS_PASSWORD or a prompt).",
    )
    p.add_argument("url", nargs="?", metavar="URL")
    p.add_argument("-c", "--config", metavar="FILE", help="find the status server in FILE")
    p.add_argument("--user", help="basic authentication login")
    p.add_argument("--json", action="store_true", help="print the JSON as it comes")
    p.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS, with rates"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    p.set_defaults(func=_status)

    p = sub.add_parser(
        "connect",
        help="relay stdin/stdout to HOST:PORT through the cluster (ssh ProxyCommand)",
        description="Open one stream to HOST:PORT through the peernode of the first source "
        "in FILE (or of --via ID) and relay it on standard input and output, e.g. "
        "ssh -o ProxyCommand='socketeer connect -c site.properties %%h %%p' host",
    )
    p.add_argument("-c", "--config", metavar="FILE", required=True)
    p.add_argument("--via", metavar="ID", help="the sourcesink to use (default: first source)")
    p.add_argument("--node", help="this node's name (default: <nodename>-<random>)")
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the stream to open (default 3 x the sourcesink's connecttimeout)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    p.add_argument("host", metavar="HOST")
    p.add_argument("port", metavar="PORT", type=int)
    p.set_defaults(func=_connect)
    return parser


def main(
    argv: Sequence[str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """The ``socketeer`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args, out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
