"""Every configuration default and limit, each defined once.

The loader fills in what the file leaves out from here, the model's dataclass defaults are
these same values, and code that also runs without a configuration (a ``Node`` built by an
embedding application or a test) imports its defaults from here too, so a setting cannot
default to one value in the file and another in the code. Pure: it imports only the constants
of the formats a setting defaults to (the channel URL's port, the STOMP frame cap, the seal
age), which live with their formats so that those import nothing from here.
"""

from __future__ import annotations

from socketeer.channel.url import DEFAULT_STOMP_PORT
from socketeer.wire.seal import DEFAULT_MAX_AGE
from socketeer.wire.stompframing import DEFAULT_MAX_BODY

# -- the broker (socketeer.general.messagingserver*) ---------------------------------------

DEFAULT_BROKER_ENABLED = False
#: The channel URL's default port, so that ``stomp://host/topic`` reaches the broker.
DEFAULT_BROKER_PORT = DEFAULT_STOMP_PORT
#: Where a listener given only as a port binds: loopback, never every interface.
DEFAULT_INTERFACE = "127.0.0.1"
#: Bytes; the STOMP parser's own cap (:data:`socketeer.wire.stompframing.DEFAULT_MAX_BODY`).
DEFAULT_MAX_FRAME_SIZE = DEFAULT_MAX_BODY
MAX_FRAME_SIZE_RANGE = (4096, 256 * 1024 * 1024)
#: Bytes that may wait for one congested subscriber before the publishers filling its queue
#: are paused: twice a stream's default window, so one stream alone never reaches it.
DEFAULT_SUBSCRIBER_QUEUE = 8 * 1024 * 1024
SUBSCRIBER_QUEUE_RANGE = (64 * 1024, 1024 * 1024 * 1024)
#: Seconds a subscriber may stay over that bound before it is disconnected with an ERROR.
DEFAULT_SLOW_SUBSCRIBER_TIMEOUT = 30.0
#: Seconds a new client has to log in (send CONNECT); RabbitMQ's handshake timeout too.
DEFAULT_BROKER_HANDSHAKE_TIMEOUT = 10.0
#: Bytes a frame may have before CONNECTED: a CONNECT is a few hundred bytes, so a stranger
#: never makes the broker hold more than this.
DEFAULT_BROKER_MAX_CONNECT_FRAME = 8192
MAX_CONNECT_FRAME_RANGE = (1024, 65536)
#: Connections in total: each is a descriptor and, before login, up to a CONNECT frame of
#: memory; a cluster needs one or two per node, and Linux's usual descriptor limit is 1024.
DEFAULT_BROKER_MAX_CONNECTIONS = 1024
#: Connections from one source address: many nodes on one host or behind one NAT fit, and
#: one host alone cannot take every slot.
DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS = 64
MAX_CONNECTIONS_RANGE = (1, 1_000_000)
#: STOMP transactions one connection may have open at once (0: BEGIN is refused).
DEFAULT_BROKER_MAX_TRANSACTIONS = 16
MAX_TRANSACTIONS_RANGE = (0, 65536)
#: Bytes the frames held in one connection's open transactions may add up to.
DEFAULT_BROKER_MAX_TRANSACTION_BYTES = 1024 * 1024
MAX_TRANSACTION_BYTES_RANGE = (1024, 1024 * 1024 * 1024)

# -- protection (socketeer.general.requireencryption, sealmaxage) ----------------------------

DEFAULT_REQUIRE_ENCRYPTION = False
#: Seconds; the seal format's own window (:data:`socketeer.wire.seal.DEFAULT_MAX_AGE`).
DEFAULT_SEAL_MAX_AGE = DEFAULT_MAX_AGE

# -- the status server (socketeer.general.statusserver*) -----------------------------------

DEFAULT_STATUS_ENABLED = False
DEFAULT_STATUS_PORT = 9626
#: Where ``socketeer status`` looks without a URL or a configuration.
DEFAULT_STATUS_URL = f"http://{DEFAULT_INTERFACE}:{DEFAULT_STATUS_PORT}/status"

# -- a sourcesink (socketeer.sourcesink.<id>.*) -----------------------------------------------

DEFAULT_SPAWNING_SINK = False
#: Bytes a stream may have in flight before it waits for the peer's acknowledgement.
DEFAULT_WINDOW = 4 * 1024 * 1024
WINDOW_RANGE = (64 * 1024, 64 * 1024 * 1024)
#: Bytes a stream's window may grow to when it is what limits the stream (auto-tuning: a
#: long fat link needs a window of its bandwidth times its round trip).
DEFAULT_MAX_WINDOW = 64 * 1024 * 1024
MAX_WINDOW_RANGE = (64 * 1024, 1024 * 1024 * 1024)
#: Bytes all of a node's windows may grow by together, beyond their first windows.
DEFAULT_WINDOW_BUDGET = 256 * 1024 * 1024
WINDOW_BUDGET_RANGE = (0, 64 * 1024 * 1024 * 1024)
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds, a sink's outbound connection
#: Seconds a source waits for the sink's answer to an OPEN (or a RESOLVE): a multiple of the
#: connect timeout, so the sink's own connect timeout runs out first and its answer says why.
OPEN_TIMEOUT_FACTOR = 3
DEFAULT_OPEN_TIMEOUT = OPEN_TIMEOUT_FACTOR * DEFAULT_CONNECT_TIMEOUT
#: OPENs and RESOLVEs a source keeps waiting while its channel is down (each for at most
#: its connect timeout); beyond this many, a new one is refused at once.
DEFAULT_MAX_PENDING_OPENS = 1024
MAX_PENDING_OPENS_RANGE = (1, 1_000_000)
#: Live streams a node carries in all, and with one peer node: each holds up to a window of
#: memory, so a peer (or a hostile broker client) cannot make a node hold without bound.
DEFAULT_MAX_STREAMS = 10_000
DEFAULT_MAX_STREAMS_PER_PEER = 4096
MAX_STREAMS_RANGE = (1, 1_000_000)
DEFAULT_GRACE_PERIOD = 60.0  # seconds streams wait for a silent peer or a lost broker
DEFAULT_PING_INTERVAL = 5.0  # seconds of silence before a peer node is pinged
DEFAULT_FIXED_TYPE = 0
#: fixedType -> what it forwards; the original Socketeer's numbering.
FIXED_TYPES = {0: "TCP"}

# -- a proxy source (a sourcesink with serverport and without fixedHost) --------------------

DEFAULT_SOCKS4_ENABLED = True
DEFAULT_SOCKS5_ENABLED = True
DEFAULT_HTTP_ENABLED = True
DEFAULT_HANDSHAKE_TIMEOUT = 10.0  # seconds for a client's SOCKS or HTTP request
DEFAULT_IDLE_TIMEOUT = 0.0  # seconds; 0: none

# -- proxy, status server and broker logins (socketeer.general.login*) ----------------------

DEFAULT_LOGIN_CACHE_SIZE = 1024  # verified credentials remembered, at most
DEFAULT_LOGIN_CACHE_AGE = 300.0  # seconds a verified credential is remembered
DEFAULT_LOGIN_MAX_FAILURES = 10  # failed logins from one address within the window ...
DEFAULT_LOGIN_FAILURE_WINDOW = 60.0  # ... of this many seconds ...
DEFAULT_LOGIN_LOCKOUT = 300.0  # ... refuse that address's logins for this many seconds
DEFAULT_LOGIN_MAX_ADDRESSES = 10_000  # addresses whose failures are remembered, at most
DEFAULT_LOGIN_THREADS = 2  # password hashes computed at once (off the reactor thread)
DEFAULT_LOGIN_MAX_PENDING = 256  # logins waiting for a hash; more are refused at once
