"""Socketeer's benchmark against direct TCP, ssh -D and pproxy (``python -m bench``)."""
