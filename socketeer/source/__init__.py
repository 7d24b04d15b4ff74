"""The source side: the fixed forward and the mixed SOCKS/HTTP proxy port."""
