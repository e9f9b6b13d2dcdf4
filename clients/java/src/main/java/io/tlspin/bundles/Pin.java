package io.tlspin.bundles;

import java.util.Arrays;
import java.util.regex.Pattern;

/**
 * A pin in the canonical text of a bundle (§9): {@code sha256/<base64>} of a certificate's
 * SubjectPublicKeyInfo (as OkHttp's), or {@code cert-sha256/<hex>} of a whole certificate.
 */
public final class Pin {
    private static final Pattern CERT = Pattern.compile("cert-sha256/[0-9a-f]{64}");

    private final boolean certificate;
    private final byte[] digest;
    private final String text;

    private Pin(boolean certificate, byte[] digest, String text) {
        this.certificate = certificate;
        this.digest = digest;
        this.text = text;
    }

    /** The pin of {@code text} if it is in canonical form, else null. */
    static Pin parseCanonical(String text) {
        if (text.startsWith("sha256/")) {
            try {
                byte[] raw = Codec.base64(text.substring("sha256/".length()), "pin", 32);
                return new Pin(false, raw, text);
            } catch (BundleException e) {
                return null;
            }
        }
        if (CERT.matcher(text).matches()) {
            byte[] raw = new byte[32];
            for (int i = 0; i < 32; i++) {
                raw[i] = (byte) Integer.parseInt(text.substring(12 + 2 * i, 14 + 2 * i), 16);
            }
            return new Pin(true, raw, text);
        }
        return null;
    }

    /**
     * SHA-256 of the SubjectPublicKeyInfo exactly as the certificate encodes it. Sliced from the
     * DER, as tlspin's Python engine does: {@code PublicKey.getEncoded()} re-encodes the key, which
     * for some keys (RSA-PSS parameters, say) gives other bytes and so another pin.
     */
    static byte[] spkiSha256(java.security.cert.X509Certificate cert) {
        try {
            return Codec.sha256(spki(cert.getEncoded()));
        } catch (java.security.cert.CertificateEncodingException | RuntimeException e) {
            return Codec.sha256(cert.getPublicKey().getEncoded());
        }
    }

    /** The SubjectPublicKeyInfo TLV of a DER certificate, byte for byte. */
    static byte[] spki(byte[] der) {
        int tbs = content(der, 0)[0];              // Certificate { tbsCertificate, … }
        int at = content(der, tbs)[0];             // tbsCertificate's first field
        if ((der[at] & 0xff) == 0xa0) {           // [0] version is optional
            at = next(der, at);
        }
        for (int skip = 0; skip < 5; skip++) {    // serial, signature, issuer, validity, subject
            at = next(der, at);
        }
        int end = next(der, at);
        byte[] out = new byte[end - at];
        System.arraycopy(der, at, out, 0, out.length);
        return out;
    }

    /** {start, end} of the content of the DER TLV at {@code at}. */
    private static int[] content(byte[] der, int at) {
        int len = der[at + 1] & 0xff;
        int start = at + 2;
        if (len >= 0x80) {
            int n = len & 0x7f;
            if (n == 0 || n > 3) {
                throw new IllegalArgumentException("unsupported DER length");
            }
            len = 0;
            for (int i = 0; i < n; i++) {
                len = (len << 8) | (der[start + i] & 0xff);
            }
            start += n;
        }
        if (start + len > der.length) {
            throw new IllegalArgumentException("truncated DER");
        }
        return new int[] {start, start + len};
    }

    private static int next(byte[] der, int at) {
        return content(der, at)[1];
    }

    /** The SPKI pin of a DER SubjectPublicKeyInfo. */
    static Pin ofSpki(byte[] spki) {
        byte[] digest = Codec.sha256(spki);
        return new Pin(false, digest, "sha256/" + Codec.base64(digest));
    }

    /** True for a whole-certificate pin ({@code cert-sha256/}), which OkHttp cannot express. */
    public boolean isCertificatePin() {
        return certificate;
    }

    byte[] digest() {
        return digest.clone();
    }

    /** True if this pin matches a certificate whose SPKI and DER digests are given. */
    boolean matches(byte[] spkiSha256, byte[] certSha256) {
        return java.security.MessageDigest.isEqual(digest, certificate ? certSha256 : spkiSha256);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Pin && ((Pin) o).certificate == certificate && Arrays.equals(((Pin) o).digest, digest);
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(digest) * 2 + (certificate ? 1 : 0);
    }

    /** The canonical text. */
    @Override
    public String toString() {
        return text;
    }
}
