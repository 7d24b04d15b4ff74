"""The login limits: ``socketeer.general.login*`` read into a LoginLimits.

They govern every password check of the proxy ports (SOCKS5 and HTTP), the status server
and the embedded broker's CONNECT (see :mod:`socketeer.logins`): how many verified
credentials are remembered and for how long, how many failures one address may have before
its logins are refused for a while, and how many hashes run (and wait) at once.
"""

from __future__ import annotations

from socketeer.config.defaults import (
    DEFAULT_LOGIN_CACHE_AGE,
    DEFAULT_LOGIN_CACHE_SIZE,
    DEFAULT_LOGIN_FAILURE_WINDOW,
    DEFAULT_LOGIN_LOCKOUT,
    DEFAULT_LOGIN_MAX_ADDRESSES,
    DEFAULT_LOGIN_MAX_FAILURES,
    DEFAULT_LOGIN_MAX_PENDING,
    DEFAULT_LOGIN_THREADS,
)
from socketeer.config.keys import (
    K_LOGIN_CACHE_AGE,
    K_LOGIN_CACHE_SIZE,
    K_LOGIN_FAILURE_WINDOW,
    K_LOGIN_LOCKOUT,
    K_LOGIN_MAX_ADDRESSES,
    K_LOGIN_MAX_FAILURES,
    K_LOGIN_MAX_PENDING,
    K_LOGIN_THREADS,
)
from socketeer.config.model import LoginLimits
from socketeer.config.properties import Properties

__all__ = ["login_limits"]


def login_limits(props: Properties) -> LoginLimits:
    """The ``login*`` keys, each with its default."""
    return LoginLimits(
        cache_size=props.integer(K_LOGIN_CACHE_SIZE, DEFAULT_LOGIN_CACHE_SIZE, 0, 1_000_000),
        cache_age=props.positive_float(K_LOGIN_CACHE_AGE, DEFAULT_LOGIN_CACHE_AGE),
        max_failures=props.integer(K_LOGIN_MAX_FAILURES, DEFAULT_LOGIN_MAX_FAILURES, 0, 1_000_000),
        failure_window=props.positive_float(K_LOGIN_FAILURE_WINDOW, DEFAULT_LOGIN_FAILURE_WINDOW),
        lockout=props.positive_float(K_LOGIN_LOCKOUT, DEFAULT_LOGIN_LOCKOUT),
        max_addresses=props.integer(
            K_LOGIN_MAX_ADDRESSES, DEFAULT_LOGIN_MAX_ADDRESSES, 1, 10_000_000
        ),
        threads=props.integer(K_LOGIN_THREADS, DEFAULT_LOGIN_THREADS, 1, 64),
        max_pending=props.integer(K_LOGIN_MAX_PENDING, DEFAULT_LOGIN_MAX_PENDING, 1, 1_000_000),
    )
