"""A sourcesink's node identity and its allowlist of peers: ``identity`` and ``peerkeys``.

``socketeer.sourcesink.<id>.identity``
    this node's private key (``socketeer genkey --identity`` prints one), a secret like a
    codekey: inline, ``env:NAME``, ``file:PATH`` or ``literal:...``
    (:mod:`socketeer.config.secretref`). Errors never show it.
``socketeer.sourcesink.<id>.peerkeys``
    the nodes this node may hold sessions with, ``node=publickey`` entries: inline,
    separated by commas (``si=Base64Key=, so=OtherKey=``), or ``file:PATH`` with one entry a
    line (``#`` comments and blank lines allowed; relative to the properties file), so a
    cluster can share one peers file. Listing the node itself is allowed (with its own
    public key).

The two go together: an identity needs someone to trust, and an allowlist needs a key
to be checked against. With them, sessions use ``Noise_IKpsk2`` (see
:mod:`socketeer.wire.noise`) and one member can no longer speak as another.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from socketeer.config.files import FileReadError, read_capped
from socketeer.config.model import ConfigError
from socketeer.config.properties import NAME_ALLOWED, Properties, is_name
from socketeer.config.secretref import SecretRefError, resolve_secret
from socketeer.wire.noise import Identity, KeyFormatError, public_key_from_text, public_key_text

__all__ = ["check_identity", "node_identity", "peer_keys"]

FILE = "file:"
#: A peers file of ten thousand nodes fits; a wrong path to a large file does not stall.
MAX_PEERS_FILE = 1024 * 1024

IDENTITY_ALLOWED = (
    "a private key as `socketeer genkey --identity` prints it (44 characters of base64), "
    "inline or as env:NAME or file:PATH"
)
PEERKEYS_ALLOWED = (
    "node=publickey entries separated by commas (public keys as `socketeer genkey "
    "--identity` prints them, 44 characters of base64), or file:PATH with one entry a line; "
    f"node names: {NAME_ALLOWED}"
)


def node_identity(props: Properties, key: str) -> Identity | None:
    """The identity at ``key``, or None when the key is not set."""
    value = props.get(key)
    if value is None:
        return None
    try:
        text = resolve_secret(value, base_dir=props.base_dir)
    except SecretRefError as e:
        raise props.error(key, f"cannot read the identity: {e}", IDENTITY_ALLOWED) from None
    try:
        return Identity.from_text(text)
    except KeyFormatError:
        # Not the library's message: the value might be a secret pasted in the wrong place.
        raise props.error(key, "not a node identity (private key)", IDENTITY_ALLOWED) from None


def _entries(props: Properties, key: str, value: str) -> list[tuple[str, str, str]]:
    """(where, node, key text) per entry; ``where`` locates it for an error message."""
    if value.startswith(FILE):
        path = value[len(FILE) :]
        if not path:
            raise props.error(key, "file: needs a path", PEERKEYS_ALLOWED)
        path = props.file_path(path)
        try:
            data = read_capped(path, MAX_PEERS_FILE, "peers file")
            text = data.decode("utf-8-sig")
        except FileReadError as e:
            raise props.error(key, str(e), PEERKEYS_ALLOWED) from None
        except UnicodeDecodeError:
            raise props.error(key, f"peers file {path} is not UTF-8 text") from None
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                found.append((f"peers file {path} line {number}", *_split(line)))
        if not found:
            raise props.error(key, f"peers file {path} lists no node", PEERKEYS_ALLOWED)
        return found
    found = []
    for number, item in enumerate(value.split(","), 1):
        item = item.strip()
        if not item:
            raise props.error(key, f"entry {number} is empty", PEERKEYS_ALLOWED)
        found.append((f"entry {number}", *_split(item)))
    return found


def _split(entry: str) -> tuple[str, str]:
    node, _, key_text = entry.partition("=")
    return node.strip(), key_text.strip()


def peer_keys(props: Properties, key: str, warnings: list[str]) -> Mapping[str, bytes] | None:
    """The allowlist at ``key`` (node name -> raw public key), or None when not set."""
    value = props.get(key)
    if value is None:
        return None
    if not value:
        raise props.error(key, "empty", PEERKEYS_ALLOWED)
    keys: dict[str, bytes] = {}
    for where, node, key_text in _entries(props, key, value):
        if not is_name(node):
            shown = node if len(node) <= 40 else node[:40] + "..."
            raise props.error(
                key, f"{where}: {shown!r} is not a node=publickey entry", PEERKEYS_ALLOWED
            )
        try:
            public = public_key_from_text(key_text)
        except KeyFormatError:
            raise props.error(
                key, f"{where}: node {node!r} has no valid public key", PEERKEYS_ALLOWED
            ) from None
        if node in keys:
            raise props.error(key, f"{where}: node {node!r} is listed twice", PEERKEYS_ALLOWED)
        keys[node] = public
    owners: dict[bytes, str] = {}
    for node, public in keys.items():
        other = owners.setdefault(public, node)
        if other != node:
            where = f"{props.path}:{props.line(key)}" if props.line(key) else props.path
            warnings.append(
                f"{where}: {key}: nodes {other!r} and {node!r} have the same public key "
                f"({public_key_text(public)}): each can pass for the other"
            )
    return MappingProxyType(keys)


def check_identity(
    props: Properties,
    identity_key: str,
    peerkeys_key: str,
    identity: Identity | None,
    keys: Mapping[str, bytes] | None,
    nodename: str,
    peernode: str | None,
) -> None:
    """The two keys agree with each other and with the node's names."""
    if identity is not None and keys is None:
        raise ConfigError(
            props.path,
            "an identity needs peerkeys (the public keys of the nodes it may talk to)",
            line=props.line(identity_key),
            key=identity_key,
            allowed=f"also set {peerkeys_key}",
        )
    if keys is not None and identity is None:
        raise props.error(
            peerkeys_key,
            "peerkeys needs identity (this node's own private key)",
            f"also set {identity_key}",
        )
    if identity is None or keys is None:
        return
    own = keys.get(nodename)
    if own is not None and own != identity.public_key:
        raise props.error(
            peerkeys_key,
            f"lists this node {nodename!r} with a key that is not its identity's "
            f"(its public key is {identity.public_text()})",
            "this node's own public key, or leave it out",
        )
    if peernode is not None and peernode not in keys:
        raise props.error(
            peerkeys_key,
            f"peernode {peernode!r} is not listed: this source could not open a session to it",
            f"an entry {peernode}=<its public key>",
        )
