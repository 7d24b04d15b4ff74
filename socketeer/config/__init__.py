"""Configuration: the properties file read into a frozen Config (imports no Twisted)."""
