"""The source side: the fixed forward and the mixed SOCKS/HTTP proxy port.

``forward`` (a fixed target), ``proxy`` (the mixed port) with its per-connection ``handler``
and the ``socks`` and ``http`` handlers; ``open`` is the policy-checked open they all use.
"""
