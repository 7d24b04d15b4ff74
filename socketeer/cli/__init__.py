"""The ``socketeer`` command: the parser in ``main``, one module per subcommand."""
