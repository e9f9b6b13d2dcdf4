from tlspin.integrations.requests import session


def test_my_client_is_pinned(pki, tls_server, mitm_proxy, rotate_to_backup,
                             assert_accepted, assert_refused):
    """My client reaches its server, survives a key rotation and refuses a MITM."""
    client = session(pki.policy("localhost"), cafile=pki.cafile)  # your client here
    assert_accepted(lambda: client.get(tls_server.url))
    rotate_to_backup()
    assert_accepted(lambda: client.get(tls_server.url))
    client.proxies = {"https": mitm_proxy.url}
    assert_refused(lambda: client.get(tls_server.url))
