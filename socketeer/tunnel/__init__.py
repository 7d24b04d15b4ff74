"""The tunnel core: streams, nodes and why a stream could not open."""
