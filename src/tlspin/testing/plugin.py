"""tlspin pytest plugin (fixtures are being written)."""
