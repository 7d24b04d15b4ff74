"""Socketeer: a VPN-like TCP tunnel that travels as messages through a STOMP broker."""

__version__ = "0.1.0.dev0"
