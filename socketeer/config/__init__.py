"""Configuration: the properties file read into a frozen Config (imports no Twisted).

From the bottom up: ``files`` and ``secretref``/``tlsfiles`` (files a configuration names),
``defaults`` (every default, once), ``keys`` (key names), ``model`` (Config, ConfigError),
``properties`` (the file read into located entries and typed values), ``endpoints``
(listener strings); the sections ``broker``, ``channels``, ``authorisation``,
``sourcesinks``, ``policies``, ``status`` and ``protection``; ``suggest`` (unknown keys);
and ``load``, which reads a file and composes the sections.
"""
