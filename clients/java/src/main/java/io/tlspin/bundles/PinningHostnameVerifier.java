package io.tlspin.bundles;

import javax.net.ssl.HostnameVerifier;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLSession;

/**
 * Checks the pins of the policy in force when OkHttp opens a TLS connection: after the
 * handshake and the host-name check, before OkHttp writes a byte on the connection. It runs for
 * every new connection of the client, WebSockets included (OkHttp runs no network interceptor
 * for a WebSocket call, so {@link PinningInterceptor} alone would let its upgrade request, with
 * the app's headers, reach a forged server).
 *
 * <p>It wraps the client's own verifier (OkHttp's by default), which runs first: pinning adds
 * to CA and host-name verification, never replaces them. Any verifier other than OkHttp's own
 * also stops OkHttp from coalescing HTTP/2 connections across hosts (a connection checked for
 * one host is never handed to a request for another).
 *
 * <p>A pin failure is thrown as {@link SSLPeerUnverifiedException} with the verdict (which keys,
 * which pins), the {@code IOException} OkHttp's connect expects, although {@code verify}
 * declares none: returning {@code false} would make OkHttp report a host-name mismatch. A
 * policy source that fails refuses the connection too.
 */
public final class PinningHostnameVerifier implements HostnameVerifier {
    private final HostnameVerifier delegate;
    private final PinCheck check;

    /**
     * @param delegate the client's host-name verifier (e.g. {@code client.hostnameVerifier()})
     * @param source the policy for each connection (e.g. a {@link BundleUpdater})
     * @param trustManager the trust manager the client verifies servers with
     * @param clock the time, for rule expiry
     */
    public PinningHostnameVerifier(HostnameVerifier delegate, PolicySource source,
            javax.net.ssl.X509TrustManager trustManager, Clock clock) {
        this(delegate, new PinCheck(source, trustManager, clock));
    }

    PinningHostnameVerifier(HostnameVerifier delegate, PinCheck check) {
        if (delegate == null) {
            throw new IllegalArgumentException("the wrapped host-name verifier is required");
        }
        this.delegate = delegate;
        this.check = check;
    }

    @Override
    public boolean verify(String hostname, SSLSession session) {
        if (!delegate.verify(hostname, session)) {
            return false;
        }
        try {
            check.handshake(hostname, session);
        } catch (SSLPeerUnverifiedException e) {
            throw PinningHostnameVerifier.<RuntimeException>sneaky(e);
        } catch (RuntimeException e) {
            // Fail closed: a check that cannot run (a broken policy source) refuses the connection.
            SSLPeerUnverifiedException refused = new SSLPeerUnverifiedException(
                    "the pin check for " + hostname + " could not run: " + e);
            refused.initCause(e);
            throw PinningHostnameVerifier.<RuntimeException>sneaky(refused);
        }
        return true;
    }

    /** Throws {@code e} (a checked IOException) through a method that declares none. */
    @SuppressWarnings("unchecked")
    private static <T extends Throwable> T sneaky(Throwable e) throws T {
        throw (T) e;
    }
}
