"""The tunnel core: streams as transports, the node, its peers, streams and counters.

``stream`` (one relayed connection), ``relay`` (a local socket joined to a stream), ``node``
(a sourcesink's presence in a cluster) with ``peers``, ``registry``, ``resolve`` and ``stats``,
``snapshot`` (a node's public picture) and ``reasons`` (why a stream could not open).
"""
