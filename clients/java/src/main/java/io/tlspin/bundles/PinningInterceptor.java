package io.tlspin.bundles;

import java.io.IOException;
import java.security.KeyStore;
import java.security.GeneralSecurityException;
import java.security.cert.X509Certificate;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.WeakHashMap;

import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;

import okhttp3.Connection;
import okhttp3.Handshake;
import okhttp3.Interceptor;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;

/**
 * An OkHttp <em>network</em> interceptor that checks every request's connection against the policy
 * in force, on the verified chain, before a byte of the request is written: the whole policy
 * (deny pins, whole-certificate pins, {@code **.} patterns on OkHttp 3, report-only rules), which
 * a {@code CertificatePinner} cannot hold. Because it runs per request, a pooled connection is
 * re-checked against new pins as soon as they are in force.
 *
 * <p>A host the policy pins is refused over cleartext HTTP: there is no chain to check.
 */
public final class PinningInterceptor implements Interceptor {
    private final PolicySource source;
    private final ChainCleaner cleaner;
    private final Clock clock;
    private final Map<Handshake, List<X509Certificate>> verified =
            Collections.synchronizedMap(new WeakHashMap<Handshake, List<X509Certificate>>());

    /**
     * @param source the policy for each request (e.g. a {@link BundleUpdater})
     * @param trustManager the trust manager the client verifies servers with (to rebuild the
     *     verified chain); the same one given to {@code OkHttpClient.Builder.sslSocketFactory}
     * @param clock the time, for rule expiry
     */
    public PinningInterceptor(PolicySource source, X509TrustManager trustManager, Clock clock) {
        this.source = source;
        this.cleaner = new ChainCleaner(trustManager);
        this.clock = clock;
    }

    /**
     * Pin {@code builder}'s connections with {@code source}: adds this interceptor as a network
     * interceptor. It reads the policy in force at every request, so one long-lived client follows
     * every update. (A {@code CertificatePinner} is fixed when the client is built: add
     * {@link OkHttpPinning#partialCertificatePinner} too only if you rebuild the client whenever
     * the policy changes.)
     */
    public static OkHttpClient.Builder install(OkHttpClient.Builder builder, PolicySource source,
            X509TrustManager trustManager, Clock clock) {
        return builder.addNetworkInterceptor(new PinningInterceptor(source, trustManager, clock));
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
        String host = request.url().host();
        Policy policy = source.currentPolicy();
        Handshake handshake = connection.handshake();
        if (handshake == null) {
            if (!policy.rulesFor(host).isEmpty()) {
                throw new SSLPeerUnverifiedException("refusing cleartext HTTP to " + host
                        + ", which the pin policy covers (use https)");
            }
            return chain.proceed(request);
        }
        if (policy.rulesFor(host).isEmpty()) {
            return chain.proceed(request);
        }
        List<X509Certificate> chainInForce = verified.get(handshake);
        if (chainInForce == null) {
            chainInForce = cleaner.clean(handshake.peerCertificates(), host);
            verified.put(handshake, chainInForce);
        }
        Verdict verdict = policy.check(host, chainInForce, OkHttpPinning.day(clock.millis()));
        if (!verdict.ok() || verdict.reportOnlyFailure() != null) {
            try {
                source.report(verdict);
            } catch (RuntimeException ignored) {
                // An observer never decides a connection.
            }
        }
        if (!verdict.ok()) {
            throw new SSLPeerUnverifiedException(verdict.describe());
        }
        return chain.proceed(request);
    }
}
