"""Test kit for tlspin: throwaway PKIs, loopback TLS servers and proxies.

Import the submodules you need (`tlspin.testing.pki`, `tlspin.testing.servers`,
`tlspin.testing.proxies`); this package module stays empty so importing it is cheap.
"""
