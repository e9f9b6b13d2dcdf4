"""Tests of the client integrations over real loopback TLS."""
