package io.tlspin.bundles;

import java.io.IOException;
import java.security.KeyStore;
import java.security.GeneralSecurityException;

import javax.net.ssl.HostnameVerifier;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;

import okhttp3.Connection;
import okhttp3.Interceptor;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;

/**
 * An OkHttp <em>network</em> interceptor that checks every request's connection against the policy
 * in force, on the verified chain, before a byte of the request is written: the whole policy
 * (deny pins, whole-certificate pins, {@code **.} patterns on OkHttp 3, report-only rules), which
 * a {@code CertificatePinner} cannot hold.
 *
 * <p>{@link #install} adds it together with a {@link PinningHostnameVerifier}, which checks each
 * new TLS connection at its handshake (WebSockets included: OkHttp runs no network interceptor
 * for them), and an application interceptor that refuses {@code http://} and {@code ws://} to
 * hosts the policy covers. This interceptor then adds the re-check of a <em>pooled</em>
 * connection once the policy changed since it was checked: new pins and deny pins apply to the
 * next request, not only to new connections.
 *
 * <p>A host the policy pins is refused over cleartext HTTP: there is no chain to check.
 */
public final class PinningInterceptor implements Interceptor {
    private final PinCheck check;

    /**
     * @param source the policy for each request (e.g. a {@link BundleUpdater})
     * @param trustManager the trust manager the client verifies servers with (to rebuild the
     *     verified chain); the same one given to {@code OkHttpClient.Builder.sslSocketFactory}
     * @param clock the time, for rule expiry
     */
    public PinningInterceptor(PolicySource source, X509TrustManager trustManager, Clock clock) {
        this(new PinCheck(source, trustManager, clock));
    }

    private PinningInterceptor(PinCheck check) {
        this.check = check;
    }

    /**
     * Pin {@code builder}'s connections with {@code source}, at every level OkHttp offers: a
     * {@link PinningHostnameVerifier} around the builder's host-name verifier (every new TLS
     * connection, WebSockets included, before any byte is written), this network interceptor
     * (every request, pooled connections included, under the policy in force then), and an
     * application interceptor that refuses cleartext ({@code http://}, {@code ws://}) to pinned
     * hosts. It reads the policy in force at every connection and request, so one long-lived
     * client follows every update.
     *
     * <p>Not covered: a WebSocket that is open keeps the connection it was checked on, and a
     * WebSocket call may reuse an idle pooled HTTP/1.1 connection that was checked under the
     * policy of its handshake (OkHttp runs no interceptor of ours for it). To make new pins
     * apply to those at once, call {@code client.connectionPool().evictAll()} and reopen
     * WebSockets on the {@code updated} and {@code expired} events. (A {@code CertificatePinner}
     * is fixed when the client is built: add {@link OkHttpPinning#partialCertificatePinner} too
     * only if you rebuild the client whenever the policy changes.)
     */
    public static OkHttpClient.Builder install(OkHttpClient.Builder builder, PolicySource source,
            X509TrustManager trustManager, Clock clock) {
        PinCheck check = new PinCheck(source, trustManager, clock);
        // The builder's current verifier (OkHttp's own unless the app set one) keeps running first.
        HostnameVerifier current = builder.build().hostnameVerifier();
        return builder
                .hostnameVerifier(new PinningHostnameVerifier(current, check))
                .addInterceptor(new CleartextGuard(check))
                .addNetworkInterceptor(new PinningInterceptor(check));
    }

    /** The platform's default trust manager (the system CAs). */
    public static X509TrustManager systemTrustManager() {
        try {
            TrustManagerFactory factory = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            factory.init((KeyStore) null);
            for (TrustManager tm : factory.getTrustManagers()) {
                if (tm instanceof X509TrustManager) {
                    return (X509TrustManager) tm;
                }
            }
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("no default trust manager: " + e, e);
        }
        throw new IllegalStateException("the default TrustManagerFactory has no X509TrustManager");
    }

    @Override
    public Response intercept(Chain chain) throws IOException {
        Request request = chain.request();
        Connection connection = chain.connection();
        if (connection == null) {
            throw new IllegalStateException("PinningInterceptor must be added with addNetworkInterceptor(): "
                    + "an application interceptor sees no connection");
        }
        check.request(request.url().host(), connection);
        return chain.proceed(request);
    }

    /**
     * Refuses {@code http://} and {@code ws://} to a host the policy covers, before connecting.
     * An application interceptor, because OkHttp runs those for WebSocket calls too.
     */
    private static final class CleartextGuard implements Interceptor {
        private final PinCheck check;

        CleartextGuard(PinCheck check) {
            this.check = check;
        }

        @Override
        public Response intercept(Chain chain) throws IOException {
            Request request = chain.request();
            if (!request.url().isHttps()) {
                check.cleartext(request.url().host());
            }
            return chain.proceed(request);
        }
    }
}
