"""Operations services added to the root: the status server and systemd readiness.

:func:`socketeer.tap.build_service` calls :func:`add_operations` after the broker and every
sourcesink, and :func:`socketeer.tap.makeService` (twistd) calls :func:`add_readiness` last,
so that both start once the listeners before them are bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["add_operations", "add_readiness"]


def add_operations(root: Any, config: Any, reactor: Any) -> None:
    """Add the status server to *root* when the configuration switches it on."""
    if getattr(config, "status", None) is not None:
        from socketeer.ops.status import StatusService

        status = StatusService(root, config, reactor)
        status.setName("status")
        status.setServiceParent(root)


def add_readiness(root: Any, environ: Mapping[str, str] | None = None) -> None:
    """Add the systemd readiness notifier (a no-op without ``$NOTIFY_SOCKET``) to *root*."""
    from socketeer.ops.systemd import ReadinessService

    readiness = ReadinessService(root.nodes.values(), environ)
    readiness.setName("readiness")
    readiness.setServiceParent(root)
