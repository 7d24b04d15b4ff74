"""Who may use the embedded broker, and which destinations each login may use.

Logins and passcodes come from ``socketeer.general.messagingserveruser.<login>=<passcode>``;
a passcode is plain text or a ``pbkdf2-sha256$...`` hash
(:func:`socketeer.passwords.hash_password`).
With no user configured, any login is accepted (the broker then listens on loopback by
default). Checking is constant-time and an unknown login costs as much as a known one.

In a Socketeer process (:func:`socketeer.app.build_service`) a CONNECT's passcode is checked
by the broker's :class:`socketeer.logins.Door` (``door="broker"``), shared with the proxy and
status logins: the PBKDF2 hash runs off the reactor thread, so one login does not freeze
every relayed stream; verified credentials are remembered (``logincachesize``,
``logincacheage``); an address with ``loginmaxfailures`` failures is locked out for
``loginlockout`` seconds; outcomes are counted in ``socketeer_logins_total{door="broker"}``.
Without a door (a BrokerFactory built by hand, tests) :meth:`BrokerAuth.check` hashes on the
calling thread and remembers a login's passcode, after it succeeded once, as an HMAC under a
random per-process key.

Destinations: ``socketeer.general.messagingserveruserdestinations.<login>=P1,P2,...`` limits
what that login may SEND to and SUBSCRIBE to. A prefix ending in ``.`` or ``/`` allows every
destination starting with it; any other prefix allows itself and what lies below it after a
``.`` or ``/``: ``/topic/sisotopic.c`` allows ``/topic/sisotopic.c`` and
``/topic/sisotopic.c.si`` but not ``/topic/sisotopic.c2``. So one broker can host several
clusters (``/topic/<topic>.<cluster>``) without one cluster's credentials reaching another's
destinations. A login without such a key may use every destination.

Certificate logins (``socketeer.general.messagingservercertlogin=cn``, like RabbitMQ's
EXTERNAL mechanism): on the TLS listener, which then requires client certificates signed by
``messagingserversslclientca``, a client's certificate common name is its login, without a
passcode, and gets that login's destinations.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping

from cryptography.x509.oid import NameOID
from twisted.internet import defer

from socketeer.logins import Door
from socketeer.passwords import dummy_stored, verify

__all__ = ["BrokerAuth", "destination_allowed"]


def destination_allowed(destination: str, prefixes: Iterable[str]) -> bool:
    """True if ``destination`` is one of ``prefixes`` or lies below one of them."""
    for prefix in prefixes:
        if prefix.endswith((".", "/")):
            if destination.startswith(prefix):
                return True
        elif destination == prefix or (
            destination.startswith(prefix) and destination[len(prefix)] in "./"
        ):
            return True
    return False


class BrokerAuth:
    """The broker's users (login -> stored passcode) and their destination prefixes."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        destinations: Mapping[str, Iterable[str]] | None = None,
        cert_login: bool = False,
        door: Door | None = None,
    ) -> None:
        self._users = dict(users or {})
        #: Checks passcodes off the reactor thread, with a cache and per-address lockout.
        self.door = door
        #: A verified client certificate's common name is a login (RabbitMQ's EXTERNAL).
        self.cert_login = cert_login
        self._destinations = {k: tuple(v) for k, v in (destinations or {}).items()}
        # What an unknown login is checked against: as costly as a real user's passcode.
        self._no_user = dummy_stored(self._users.values())
        self._key = os.urandom(32)
        self._verified: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"<BrokerAuth {len(self._users)} users, {len(self._destinations)} restricted>"

    @property
    def open(self) -> bool:
        """No users configured: any login is accepted."""
        return not self._users

    def check(self, login: str | None, passcode: str | None) -> bool:
        """True if *login* may log in with *passcode*; hashes on the calling thread."""
        if not self._users:
            return True
        stored = self._users.get(login) if login is not None else None
        given = passcode or ""
        mac = hmac.new(self._key, given.encode("utf-8"), hashlib.sha256).digest()
        known = self._verified.get(login) if stored is not None else None
        if known is not None and hmac.compare_digest(known, mac):
            return passcode is not None
        ok = verify(stored if stored is not None else self._no_user, given)
        if ok and stored is not None and passcode is not None:
            self._verified[login] = mac
            return True
        return False

    def verdict(self, login: str | None, passcode: str | None, address: str) -> defer.Deferred:
        """A Deferred firing the outcome of a CONNECT's login from *address*.

        One of :data:`socketeer.logins.OUTCOMES` (``ok`` and ``cached`` let it in). With a
        door the hash runs in a thread and the answer comes later; without one, at once. A
        missing login or passcode header is an empty one. An open broker (no users) says
        ``ok`` and counts nothing: there was no password to check.
        """
        if not self._users:
            return defer.succeed("ok")
        if self.door is None:
            return defer.succeed("ok" if self.check(login, passcode) else "failed")
        return self.door.check(login or "", passcode or "", address)

    def certified_login(self, transport: object, login: str | None) -> str | None:
        """The login a verified client certificate gives this connection, or None.

        With certificate logins on, a client that presented a certificate (over a listener
        that requires and verifies them) logs in as its common name without a passcode, if
        that is a broker user (or no users are configured) and the CONNECT names no other
        login. Otherwise the passcode is checked as usual.
        """
        if not self.cert_login:
            return None
        get = getattr(transport, "getPeerCertificate", None)
        cert = get() if get is not None else None
        if cert is None:
            return None
        names = cert.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1 or not isinstance(names[0].value, str):
            return None
        common_name = names[0].value
        if login is not None and login != common_name:
            return None
        if self._users and common_name not in self._users:
            return None
        return common_name

    def allowed(self, login: str | None, destination: str) -> bool:
        """May ``login`` send to / subscribe to ``destination``?"""
        prefixes = self._destinations.get(login) if login is not None else None
        return prefixes is None or destination_allowed(destination, prefixes)
