"""Shared test helpers: relays, echo servers, free ports, properties builders."""
