"""Sans-IO wire formats: bytes in, events out. Nothing here imports twisted."""
