"""The embedded STOMP broker: connection protocol, routing, users and listeners."""
