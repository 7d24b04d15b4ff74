"""The configuration's key names: prefixes, the known keys, and which section a key is in.

The keys are the ones of the original (Java) Socketeer, kept verbatim and case-sensitive,
so existing ``socketeer.properties`` files keep working. Every module that reads or
suggests a key takes its name from here.
"""

from __future__ import annotations

GENERAL = "socketeer.general."
SOURCESINK = "socketeer.sourcesink."
#: ``socketeer.authorisation.<profile>.user.<name>``: the users of a proxy source.
AUTH = "socketeer.authorisation."

# The broker.
K_ENABLED = GENERAL + "messagingserverenabled"
K_PORT = GENERAL + "messagingserverport"
K_INTERFACE = GENERAL + "messagingserverinterface"
K_MAXFRAME = GENERAL + "messagingservermaxframesize"
K_SUBSCRIBERQUEUE = GENERAL + "messagingserversubscriberqueue"
K_SLOWSUBSCRIBERTIMEOUT = GENERAL + "messagingserverslowsubscribertimeout"
# What a stranger may cost the broker, and its STOMP transactions.
K_HANDSHAKE_TIMEOUT = GENERAL + "messagingserverhandshaketimeout"
K_MAXCONNECTFRAME = GENERAL + "messagingservermaxconnectframesize"
K_MAXCONNECTIONS = GENERAL + "messagingservermaxconnections"
K_MAXCONNECTIONS_PER_ADDRESS = GENERAL + "messagingservermaxconnectionsperaddress"
K_MAXTRANSACTIONS = GENERAL + "messagingservermaxtransactions"
K_MAXTRANSACTION_BYTES = GENERAL + "messagingservermaxtransactionbytes"
#: ``messagingserveruser.<login>=<passcode>``: the broker's users.
USER_PREFIX = GENERAL + "messagingserveruser."
# The broker's TLS listener and per-login destinations.
K_SSLPORT = GENERAL + "messagingserversslport"
K_SSLCERT = GENERAL + "messagingserversslcert"
K_SSLKEY = GENERAL + "messagingserversslkey"
K_SSLCLIENTCA = GENERAL + "messagingserversslclientca"
#: Decrypts an encrypted messagingserversslkey (a secret reference like any secret).
K_SSLKEYPASSPHRASE = GENERAL + "messagingserversslkeypassphrase"
#: ``cn``: a verified client certificate's common name is the broker login.
K_CERTLOGIN = GENERAL + "messagingservercertlogin"
#: ``messagingserveruserdestinations.<login>=<prefix>,...``
USER_DEST_PREFIX = GENERAL + "messagingserveruserdestinations."
# How tunnel traffic must be protected.
K_REQUIRE_ENCRYPTION = GENERAL + "requireencryption"
K_SEAL_MAX_AGE = GENERAL + "sealmaxage"
# The status server.
K_STATUS_ENABLED = GENERAL + "statusserverenabled"
K_STATUS_PORT = GENERAL + "statusserverport"
K_STATUS_INTERFACE = GENERAL + "statusserverinterface"
#: ``statusserveruser.<login>=<password>``: who may read the status server.
STATUS_USER_PREFIX = GENERAL + "statusserveruser."
STATUS_KEYS = (K_STATUS_ENABLED, K_STATUS_PORT, K_STATUS_INTERFACE)
# Proxy, status server and broker logins: the verified-credentials cache, failed-attempt limits and
# the hashing threads.
K_LOGIN_CACHE_SIZE = GENERAL + "logincachesize"
K_LOGIN_CACHE_AGE = GENERAL + "logincacheage"
K_LOGIN_MAX_FAILURES = GENERAL + "loginmaxfailures"
K_LOGIN_FAILURE_WINDOW = GENERAL + "loginfailurewindow"
K_LOGIN_LOCKOUT = GENERAL + "loginlockout"
K_LOGIN_MAX_ADDRESSES = GENERAL + "loginmaxaddresses"
K_LOGIN_THREADS = GENERAL + "loginthreads"
K_LOGIN_MAX_PENDING = GENERAL + "loginmaxpending"
LOGIN_KEYS = (
    K_LOGIN_CACHE_SIZE,
    K_LOGIN_CACHE_AGE,
    K_LOGIN_MAX_FAILURES,
    K_LOGIN_FAILURE_WINDOW,
    K_LOGIN_LOCKOUT,
    K_LOGIN_MAX_ADDRESSES,
    K_LOGIN_THREADS,
    K_LOGIN_MAX_PENDING,
)

#: Every ``socketeer.general.*`` key but the per-login ones.
GENERAL_KEYS = (
    K_ENABLED,
    K_PORT,
    K_INTERFACE,
    K_MAXFRAME,
    K_SUBSCRIBERQUEUE,
    K_SLOWSUBSCRIBERTIMEOUT,
    K_HANDSHAKE_TIMEOUT,
    K_MAXCONNECTFRAME,
    K_MAXCONNECTIONS,
    K_MAXCONNECTIONS_PER_ADDRESS,
    K_MAXTRANSACTIONS,
    K_MAXTRANSACTION_BYTES,
    K_SSLPORT,
    K_SSLCERT,
    K_SSLKEY,
    K_SSLCLIENTCA,
    K_SSLKEYPASSPHRASE,
    K_CERTLOGIN,
    K_REQUIRE_ENCRYPTION,
    K_SEAL_MAX_AGE,
    *STATUS_KEYS,
    *LOGIN_KEYS,
)

#: The ``<key>`` of ``socketeer.sourcesink.<id>.<key>``.
SOURCESINK_KEYS = (
    "clustername",
    "nodename",
    "channel",
    "serverport",
    "serverinterface",
    "isSpawningAndResolvingSink",
    "peernode",
    "fixedHost",
    "fixedPort",
    "fixedType",
    "accesslist",
    "whitelist",
    "blacklist",
    "maplist",
    "connecttimeout",
    "maxpendingopens",
    "maxstreams",
    "maxstreamsperpeer",
    "maxwindow",
    "windowbudget",
    "window",
    "socks4enabled",
    "socks5enabled",
    "httpenabled",
    "authorisation",
    "handshaketimeout",
    "idletimeout",
    "graceperiod",
    "pinginterval",
    "identity",
    "peerkeys",
)

#: List profiles: ``socketeer.<kind>.<profile>[.<entry>].<field>``, referenced by
#: ``socketeer.sourcesink.<id>.<kind>=<profile>[,<profile>...]`` (see socketeer/policy.py).
POLICY_FIELDS = {
    "accesslist": ("host",),
    "whitelist": ("cluster", "node", "host", "port"),
    "blacklist": ("cluster", "node", "host", "port"),
    "maplist": ("cluster", "node", "orghost", "orgport", "maphost", "mapport"),
}


def sourcesink_id(key: str) -> str | None:
    """The ``<id>`` of a known ``socketeer.sourcesink.<id>.<key>``, else None."""
    if not key.startswith(SOURCESINK):
        return None
    sid, dot, sub = key[len(SOURCESINK) :].partition(".")
    if not dot or sub not in SOURCESINK_KEYS or not sid:
        return None
    return sid


def is_status_user_key(key: str) -> bool:
    """``statusserveruser.<login>`` with a login."""
    return key.startswith(STATUS_USER_PREFIX) and len(key) > len(STATUS_USER_PREFIX)
