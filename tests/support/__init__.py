"""Shared test helpers, one home each.

``net``: free ports, polling, listeners, clients, echo and digest servers; ``properties``:
the properties builder and copies of etc/ files; ``relay``: the in-process relay (the
``relay`` fixture); ``twistd``: real twistd children; ``cli``: the ``socketeer`` script as a
child; ``ops``: whole services from properties, HTTP GET; ``logs``: log capture;
``security``: certificates, frame captures, raw STOMP, a relay with sealing and TLS options;
``streams``: streams without a node; ``faults``: counting targets, a client that tells a reset
from a FIN, a recorder and replayer at the broker, a link that swallows a node's frames.
"""

from pathlib import Path

#: The checkout (its etc/, docs/ and the package twistd must find).
ROOT = Path(__file__).resolve().parents[2]
