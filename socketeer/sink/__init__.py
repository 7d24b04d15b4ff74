"""The sink side: OPEN messages become real outbound connections (``connect``, ``resolve``)."""
