package io.tlspin.bundles;

import java.net.Socket;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.WeakHashMap;

import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.X509TrustManager;

import okhttp3.Connection;
import okhttp3.Handshake;

/**
 * The pin check that {@link PinningHostnameVerifier} runs at each TLS handshake and
 * {@link PinningInterceptor} before each request: the policy in force, on the verified chain.
 *
 * <p>It remembers, per TLS session, the policy and host a connection passed under, so that the
 * interceptor re-checks a pooled connection only when the policy changed since (and reports a
 * report-only failure once per connection and policy, not once per request). Nothing is ever
 * skipped on that memory's absence: a connection it does not know is checked in full.
 */
final class PinCheck {
    private final PolicySource source;
    private final ChainCleaner cleaner;
    private final Clock clock;
    private final Map<SSLSession, Passed> passed =
            Collections.synchronizedMap(new WeakHashMap<SSLSession, Passed>());
    private final Map<Handshake, List<X509Certificate>> cleaned =
            Collections.synchronizedMap(new WeakHashMap<Handshake, List<X509Certificate>>());

    private static final class Passed {
        final Policy policy;
        final String host;

        Passed(Policy policy, String host) {
            this.policy = policy;
            this.host = host;
        }
    }

    PinCheck(PolicySource source, X509TrustManager trustManager, Clock clock) {
        this.source = source;
        this.cleaner = new ChainCleaner(trustManager);
        this.clock = clock;
    }

    /** At the end of a handshake, before any byte of a request: refuse, or remember the pass. */
    void handshake(String host, SSLSession session) throws SSLPeerUnverifiedException {
        Policy policy = source.currentPolicy();
        if (policy.rulesFor(host).isEmpty()) {
            return;
        }
        Certificate[] served = session.getPeerCertificates();
        check(policy, host, cleaner.clean(Arrays.asList(served), host));
        passed.put(session, new Passed(policy, host));
    }

    /** Before a request on {@code connection} (new or pooled) to {@code host}. */
    void request(String host, Connection connection) throws SSLPeerUnverifiedException {
        Policy policy = source.currentPolicy();
        Handshake handshake = connection.handshake();
        if (handshake == null) {
            cleartext(host);
            return;
        }
        if (policy.rulesFor(host).isEmpty()) {
            return;
        }
        SSLSession session = session(connection);
        Passed before = session == null ? null : passed.get(session);
        if (before != null && before.policy == policy && before.host.equals(host)) {
            return; // checked at its handshake (or an earlier request) under this very policy
        }
        List<X509Certificate> chain = cleaned.get(handshake);
        if (chain == null) {
            chain = cleaner.clean(handshake.peerCertificates(), host);
            cleaned.put(handshake, chain);
        }
        check(policy, host, chain);
        if (session != null) {
            passed.put(session, new Passed(policy, host));
        }
    }

    /** A plain-HTTP request to a host the policy covers is refused (there is no chain to check). */
    void cleartext(String host) throws SSLPeerUnverifiedException {
        if (!source.currentPolicy().rulesFor(host).isEmpty()) {
            throw new SSLPeerUnverifiedException("refusing cleartext HTTP to " + host
                    + ", which the pin policy covers (use https or wss)");
        }
    }

    private void check(Policy policy, String host, List<X509Certificate> chain) throws SSLPeerUnverifiedException {
        Verdict verdict = policy.check(host, chain, OkHttpPinning.day(clock.millis()));
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
    }

    private static SSLSession session(Connection connection) {
        Socket socket = connection.socket();
        return socket instanceof SSLSocket ? ((SSLSocket) socket).getSession() : null;
    }
}
