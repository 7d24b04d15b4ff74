"""A node's channel to the broker: channel URLs, endpoints (failover, TLS) and the STOMP client."""
