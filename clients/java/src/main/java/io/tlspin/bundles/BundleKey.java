package io.tlspin.bundles;

import java.util.Arrays;

import org.bouncycastle.crypto.params.Ed25519PublicKeyParameters;
import org.bouncycastle.crypto.signers.Ed25519Signer;

/**
 * An Ed25519 public key that may sign bundles (docs/bundle-format.md §5): written as the
 * standard padded base64 of its raw 32 bytes; its key id is the hex SHA-256 of those bytes.
 *
 * <p>Verification uses BouncyCastle's lightweight API, because Android has no Ed25519 before
 * API 33; it refuses non-canonical signatures (S ≥ L), as RFC 8032 requires.
 */
public final class BundleKey {
    private final byte[] raw;
    private final String keyId;

    BundleKey(byte[] raw) {
        if (raw.length != 32) {
            throw new IllegalArgumentException("an Ed25519 public key is 32 bytes, found " + raw.length);
        }
        this.raw = raw.clone();
        this.keyId = Codec.hex(Codec.sha256(raw));
    }

    /**
     * Read a key in its text form: base64 of the raw 32 bytes, optionally prefixed {@code ed25519:}.
     *
     * @throws BundleException reason {@code key}: not such a key
     */
    public static BundleKey parse(String text) throws BundleException {
        String t = text == null ? "" : text.trim();
        if (t.startsWith("ed25519:")) {
            t = t.substring("ed25519:".length());
        }
        try {
            return new BundleKey(Codec.base64(t, "a public key", 32));
        } catch (BundleException e) {
            throw new BundleException(BundleException.KEY, e.detail());
        }
    }

    /** The base64 text form. */
    public String base64() {
        return Codec.base64(raw);
    }

    /** Lower-case hex SHA-256 of the raw key. */
    public String keyId() {
        return keyId;
    }

    /** True if {@code signature} is this key's pure Ed25519 signature of {@code message}. */
    boolean verify(byte[] signature, byte[] message) {
        try {
            Ed25519Signer signer = new Ed25519Signer();
            signer.init(false, new Ed25519PublicKeyParameters(raw, 0));
            signer.update(message, 0, message.length);
            return signer.verifySignature(signature);
        } catch (RuntimeException e) {
            // A key that is not a curve point (newer BouncyCastle checks at construction)
            // verifies nothing, as in every other library.
            return false;
        }
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof BundleKey && Arrays.equals(raw, ((BundleKey) o).raw);
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(raw);
    }

    @Override
    public String toString() {
        return base64();
    }
}
