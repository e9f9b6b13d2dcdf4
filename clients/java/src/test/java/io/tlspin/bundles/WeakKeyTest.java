package io.tlspin.bundles;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.math.BigInteger;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

import org.junit.Test;

/**
 * Ed25519 keys that must never be trusted (docs/bundle-format.md §5.1): every point of order
 * dividing 8, in every spelling, and every non-canonical encoding (y ≥ p). The torsion points are
 * found here with a few lines of curve arithmetic, as [L]Q, not taken from the code's list.
 */
public class WeakKeyTest {
    private static final BigInteger P = BigInteger.ONE.shiftLeft(255).subtract(BigInteger.valueOf(19));
    private static final BigInteger D = BigInteger.valueOf(-121665)
            .multiply(BigInteger.valueOf(121666).modInverse(P)).mod(P);
    private static final BigInteger L = BigInteger.ONE.shiftLeft(252)
            .add(new BigInteger("27742317777372353535851937790883648493"));
    private static final List<BigInteger> IDENTITY = Arrays.asList(BigInteger.ZERO, BigInteger.ONE);

    private static List<BigInteger> add(List<BigInteger> a, List<BigInteger> b) {
        BigInteger x1 = a.get(0), y1 = a.get(1), x2 = b.get(0), y2 = b.get(1);
        BigInteger t = D.multiply(x1).multiply(x2).multiply(y1).multiply(y2).mod(P);
        BigInteger x3 = x1.multiply(y2).add(x2.multiply(y1)).multiply(BigInteger.ONE.add(t).modInverse(P)).mod(P);
        BigInteger y3 = y1.multiply(y2).add(x1.multiply(x2)).multiply(BigInteger.ONE.subtract(t).mod(P).modInverse(P)).mod(P);
        return Arrays.asList(x3, y3);
    }

    private static List<BigInteger> times(BigInteger n, List<BigInteger> point) {
        List<BigInteger> out = IDENTITY;
        for (int i = 0; i < n.bitLength(); i++) {
            if (n.testBit(i)) {
                out = add(out, point);
            }
            point = add(point, point);
        }
        return out;
    }

    /** The point with this y and an even x, or null (RFC 8032 §5.1.3). */
    private static List<BigInteger> point(BigInteger y) {
        BigInteger u = y.multiply(y).subtract(BigInteger.ONE).mod(P);
        BigInteger v = D.multiply(y).multiply(y).add(BigInteger.ONE).mod(P);
        BigInteger x = u.multiply(v.pow(3)).multiply(u.multiply(v.pow(7)).modPow(P.subtract(BigInteger.valueOf(5)).shiftRight(3), P)).mod(P);
        if (v.multiply(x).multiply(x).mod(P).equals(u.negate().mod(P))) {
            x = x.multiply(BigInteger.valueOf(2).modPow(P.subtract(BigInteger.ONE).shiftRight(2), P)).mod(P);
        }
        if (!v.multiply(x).multiply(x).mod(P).equals(u)) {
            return null;
        }
        return Arrays.asList(x.testBit(0) ? P.subtract(x) : x, y);
    }

    private static byte[] encode(BigInteger y, boolean sign) {
        byte[] out = new byte[32];
        byte[] big = y.toByteArray();
        for (int i = 0; i < big.length && i < 32; i++) {
            out[i] = big[big.length - 1 - i];
        }
        if (sign) {
            out[31] |= (byte) 0x80;
        }
        return out;
    }

    @Test
    public void everySmallOrderPointIsRefusedInEverySpelling() throws Exception {
        Set<List<BigInteger>> torsion = new LinkedHashSet<List<BigInteger>>();
        for (int y = 2; torsion.size() < 8; y++) {
            List<BigInteger> q = point(BigInteger.valueOf(y));
            if (q == null) {
                continue;
            }
            List<BigInteger> t = times(L, q);
            for (int k = 0; k < 8; k++) {
                torsion.add(times(BigInteger.valueOf(k), t));
            }
        }
        assertEquals(8, torsion.size());
        assertTrue(torsion.contains(IDENTITY));
        for (List<BigInteger> t : torsion) {
            assertEquals(IDENTITY, times(BigInteger.valueOf(8), t));
            for (boolean sign : new boolean[] {false, true}) {
                byte[] raw = encode(t.get(1), sign);
                String problem = BundleKey.pointProblem(raw);
                assertNotNull(problem);
                assertTrue(problem, problem.contains("small order"));
                refused(Codec.base64(raw), "small order");
            }
        }
        for (BigInteger y = P; y.bitLength() <= 255; y = y.add(BigInteger.ONE)) {
            for (boolean sign : new boolean[] {false, true}) {
                refused(Codec.base64(encode(y, sign)), "not canonical");
            }
        }
        refused(Codec.base64(encode(BigInteger.valueOf(2), false)), "not a point");
    }

    private static void refused(String key, String why) {
        try {
            KeySet.of(Collections.singletonList(key), 1);
            fail("accepted " + key);
        } catch (BundleException e) {
            assertEquals(BundleException.KEY, e.reason());
            assertTrue(e.detail(), e.detail().contains(why));
        }
    }

    @Test
    public void realKeysPass() throws Exception {
        for (int seed : new int[] {Signing.A, Signing.B, Signing.X, 7, 200}) {
            assertEquals(Signing.pub(seed), KeySet.of(Collections.singletonList(Signing.pub(seed)), 1).keys().get(0).base64());
        }
        List<BigInteger> q = point(BigInteger.valueOf(3));
        assertNotNull(q);
        assertTrue(!times(BigInteger.valueOf(8), q).equals(IDENTITY));
        assertNull(BundleKey.pointProblem(encode(q.get(1), q.get(0).testBit(0))));
    }
}
