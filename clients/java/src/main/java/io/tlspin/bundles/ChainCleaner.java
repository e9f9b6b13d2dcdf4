package io.tlspin.bundles;

import java.security.GeneralSecurityException;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.List;

import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.X509TrustManager;

/**
 * The verified chain, rebuilt from what the server sent: from the leaf, each certificate's issuer
 * by name and signature, until a self-signed certificate the trust manager trusts.
 *
 * <p>Why: pins must be checked against the chain that was verified, never the chain as served,
 * where an attacker can append any certificate (one that holds a pinned key, say). OkHttp 4's
 * {@code Handshake.peerCertificates()} is already cleaned this way; OkHttp 3's is the served
 * chain. Rebuilding is idempotent, so both get the same result. The TLS stack verified the chain
 * during the handshake already; this only recovers which certificates it consists of.
 */
final class ChainCleaner {
    private static final int MAX_SIGNERS = 9;
    private final X509TrustManager trustManager;

    ChainCleaner(X509TrustManager trustManager) {
        this.trustManager = trustManager;
    }

    List<X509Certificate> clean(List<Certificate> served, String host) throws SSLPeerUnverifiedException {
        List<X509Certificate> queue = new ArrayList<X509Certificate>();
        for (Certificate c : served) {
            if (c instanceof X509Certificate) {
                queue.add((X509Certificate) c);
            }
        }
        if (queue.isEmpty()) {
            throw new SSLPeerUnverifiedException(host + " presented no X.509 certificate");
        }
        X509Certificate[] anchors = trustManager.getAcceptedIssuers();
        List<X509Certificate> result = new ArrayList<X509Certificate>();
        result.add(queue.remove(0));
        boolean trusted = false;
        next:
        for (int n = 0; n < MAX_SIGNERS; n++) {
            X509Certificate last = result.get(result.size() - 1);
            X509Certificate anchor = issuer(last, anchors);
            if (anchor != null) {
                if (result.size() > 1 || !last.equals(anchor)) {
                    result.add(anchor);
                }
                if (signedBy(anchor, anchor)) {
                    return result;
                }
                trusted = true;
                continue;
            }
            for (int i = 0; i < queue.size(); i++) {
                X509Certificate candidate = queue.get(i);
                if (last.getIssuerX500Principal().equals(candidate.getSubjectX500Principal())
                        && signedBy(last, candidate)) {
                    result.add(queue.remove(i));
                    continue next;
                }
            }
            if (trusted) {
                return result;
            }
            throw new SSLPeerUnverifiedException("no chain from the certificate of " + host
                    + " to a trusted root: cannot check its pins on the verified chain");
        }
        throw new SSLPeerUnverifiedException("the chain of " + host + " is longer than " + MAX_SIGNERS);
    }

    private static X509Certificate issuer(X509Certificate cert, X509Certificate[] anchors) {
        for (X509Certificate anchor : anchors) {
            if (cert.getIssuerX500Principal().equals(anchor.getSubjectX500Principal()) && signedBy(cert, anchor)) {
                return anchor;
            }
        }
        return null;
    }

    private static boolean signedBy(X509Certificate cert, X509Certificate issuer) {
        try {
            cert.verify(issuer.getPublicKey());
            return true;
        } catch (GeneralSecurityException | RuntimeException e) {
            return false;
        }
    }
}
