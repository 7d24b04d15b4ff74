"""Every configuration default and limit, each defined once.

The loader fills in what the file leaves out from here, the model's dataclass defaults are
these same values, and code that also runs without a configuration (a ``Node`` built by an
embedding application or a test) imports its defaults from here too, so a setting cannot
default to one value in the file and another in the code. Pure: no imports but the seal
format's, whose own constant the seal age setting defaults to.
"""

from __future__ import annotations

from socketeer.wire.seal import DEFAULT_MAX_AGE

# -- the broker (socketeer.general.messagingserver*) ---------------------------------------

DEFAULT_BROKER_ENABLED = False
DEFAULT_BROKER_PORT = 61626
#: Where a listener given only as a port binds: loopback, never every interface.
DEFAULT_INTERFACE = "127.0.0.1"
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024  # bytes
MAX_FRAME_SIZE_RANGE = (4096, 256 * 1024 * 1024)

# -- protection (socketeer.general.requireencryption, sealmaxage) ----------------------------

DEFAULT_REQUIRE_ENCRYPTION = False
#: Seconds; the seal format's own window (:data:`socketeer.wire.seal.DEFAULT_MAX_AGE`).
DEFAULT_SEAL_MAX_AGE = DEFAULT_MAX_AGE

# -- the status server (socketeer.general.statusserver*) -----------------------------------

DEFAULT_STATUS_ENABLED = False
DEFAULT_STATUS_PORT = 9626

# -- a sourcesink (socketeer.sourcesink.<id>.*) -----------------------------------------------

DEFAULT_SPAWNING_SINK = False
#: Bytes a stream may have in flight before it waits for the peer's acknowledgement.
DEFAULT_WINDOW = 4 * 1024 * 1024
WINDOW_RANGE = (64 * 1024, 64 * 1024 * 1024)
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds, a sink's outbound connection
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
