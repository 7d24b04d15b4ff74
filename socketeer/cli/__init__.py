"""The ``socketeer`` command."""
