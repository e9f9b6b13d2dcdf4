package io.tlspin.bundles;

import java.math.BigInteger;
import java.util.Arrays;

import org.bouncycastle.crypto.params.Ed25519PublicKeyParameters;
import org.bouncycastle.crypto.signers.Ed25519Signer;

/**
 * An Ed25519 public key that may sign bundles (docs/bundle-format.md §5): written as the
 * standard padded base64 of its raw 32 bytes; its key id is the hex SHA-256 of those bytes.
 *
 * <p>Verification uses BouncyCastle's lightweight API, because Android has no Ed25519 before
 * API 33; it refuses non-canonical signatures (S ≥ L), as RFC 8032 requires.
 *
 * <p>Keys that are not safe to trust are refused wherever they enter (§5.1, {@link
 * #pointProblem}): a non-canonical encoding, a point of small order, bytes off the curve.
 */
public final class BundleKey {
    // edwards25519 (RFC 8032 §5.1): the field prime and the curve constant d.
    private static final BigInteger P = BigInteger.ONE.shiftLeft(255).subtract(BigInteger.valueOf(19));
    private static final BigInteger D = BigInteger.valueOf(-121665)
            .multiply(BigInteger.valueOf(121666).modInverse(P)).mod(P);
    // The points of order dividing 8 (exactly 8 points) by their y coordinate: the identity
    // (y = 1), (0, -1) (order 2), the two points with y = 0 (order 4), and the four points of
    // order 8 (x = ±, for y = Y8 and p - Y8). The x sign bit is ignored, as libsodium's
    // blocklist does: with x = 0 a set sign bit is only another, non-canonical, spelling.
    private static final BigInteger Y8 = new BigInteger(
            "2707385501144840649318225287225658788936804267575313519463743609750303402022");
    private static final BigInteger[] SMALL_ORDER_Y = {
        BigInteger.ONE, P.subtract(BigInteger.ONE), BigInteger.ZERO, Y8, P.subtract(Y8),
    };

    private final byte[] raw;
    private final String keyId;

    private BundleKey(byte[] raw) {
        this.raw = raw.clone();
        this.keyId = Codec.hex(Codec.sha256(raw));
    }

    /**
     * The key with these 32 raw bytes.
     *
     * @throws BundleException with {@code reason}: not 32 bytes, or not a safe key
     */
    static BundleKey of(byte[] raw, String what, String reason) throws BundleException {
        if (raw.length != 32) {
            throw new BundleException(reason, what + ": an Ed25519 public key is 32 bytes, found " + raw.length);
        }
        String problem = pointProblem(raw);
        if (problem != null) {
            throw new BundleException(reason, what + ": refusing the Ed25519 public key "
                    + Codec.base64(raw) + ": " + problem);
        }
        return new BundleKey(raw);
    }

    /**
     * Why the 32 bytes {@code raw} are not a safe Ed25519 public key, or null (the same rules and
     * sentences as tlspin's Python {@code point_problem}): an encoding whose y coordinate is not
     * below the field prime (a second spelling of a point, which libraries disagree on), a point
     * of small order (for those, a signature R = identity, S = 0 verifies for every message, so
     * anyone could sign as that "key"), and bytes that are no point of the curve.
     */
    static String pointProblem(byte[] raw) {
        byte[] bigEndian = new byte[32];
        for (int i = 0; i < 32; i++) {
            bigEndian[i] = raw[31 - i];
        }
        bigEndian[0] &= 0x7f; // the x sign bit
        BigInteger y = new BigInteger(1, bigEndian);
        if (y.compareTo(P) >= 0) {
            return "its encoding is not canonical (y coordinate 2^255 - 19 or more, another spelling "
                    + "of y = " + y.subtract(P) + "); expected a key as Ed25519 key generation writes it";
        }
        for (BigInteger small : SMALL_ORDER_Y) {
            if (y.equals(small)) {
                return "it is a point of small order (the identity or another point of order dividing 8): "
                        + "anyone can make signatures that verify under it without a private key";
            }
        }
        // x^2 = (y^2 - 1) / (d y^2 + 1): a point exists only if that is a square (Euler's criterion).
        BigInteger y2 = y.multiply(y);
        BigInteger x2 = y2.subtract(BigInteger.ONE).multiply(D.multiply(y2).add(BigInteger.ONE).modInverse(P)).mod(P);
        if (!x2.modPow(P.subtract(BigInteger.ONE).shiftRight(1), P).equals(BigInteger.ONE)) {
            return "it is not a point of the Ed25519 curve";
        }
        return null;
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
        byte[] raw;
        try {
            raw = Codec.base64(t, "a public key", 32);
        } catch (BundleException e) {
            throw new BundleException(BundleException.KEY, e.detail());
        }
        return of(raw, "a public key", BundleException.KEY);
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
            // Not reached for keys that passed pointProblem(); kept so that a library's own
            // refusal can never turn into a crash.
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
