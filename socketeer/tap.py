"""``twistd socketeer``: command-line options, and the service tree for a process of its own.

``makeService`` is the only place that touches the global reactor. Beyond
:func:`socketeer.app.build_service` it adds what belongs to a whole process and not to an
embedding application: malloc tuning, systemd readiness and the SIGHUP policy reload.
"""

from __future__ import annotations

import os
import signal

from twisted.application.service import IService
from twisted.python import usage

from socketeer import __version__
from socketeer.app import build_service, reload_policies
from socketeer.config.load import load_config
from socketeer.config.model import ConfigError
from socketeer.ops.memtune import tune_malloc
from socketeer.ops.systemd import ReadinessService


class Options(usage.Options):
    synopsis = "-c FILE"
    longdesc = (
        "Run Socketeer nodes (sources, sinks) and optionally the embedded STOMP broker, as "
        "described by a Java .properties file (see etc/socketeer.properties)."
    )
    optParameters = [
        ["config", "c", None, "The socketeer.properties file to run (required)."],
    ]

    def opt_version(self) -> None:
        """Print the Socketeer version and exit."""
        print(f"socketeer {__version__}")  # noqa: T201 - usage output
        raise SystemExit(0)

    def postOptions(self) -> None:
        path = self["config"]
        if not path:
            raise usage.UsageError("-c/--config FILE is required")
        try:
            self["parsed"] = load_config(path)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    tune_malloc()  # our own process: keep relayed buffers for reuse (socketeer.ops.memtune)
    root = build_service(options["parsed"], reactor)
    root.exit_on_listen_error = True  # one line and exit status 1, not a traceback
    # systemd Type=notify: READY=1 once every node is connected. Added last, so it starts
    # after every listener before it is bound.
    readiness = ReadinessService(root.nodes.values())
    readiness.setName("readiness")
    readiness.setServiceParent(root)
    path = os.path.abspath(options["config"])

    def hangup(signum, frame) -> None:  # twistd daemons reload on SIGHUP
        reactor.callFromThread(reload_policies, root, path)

    signal.signal(signal.SIGHUP, hangup)
    return root
