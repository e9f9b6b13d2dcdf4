package io.tlspin.bundles;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bouncycastle.crypto.params.Ed25519PrivateKeyParameters;
import org.bouncycastle.crypto.signers.Ed25519Signer;

/** Test bundles signed with the fixed keys of the vectors (seed = 32 bytes of one value). */
final class Signing {
    static final int A = 1;
    static final int B = 2;
    static final int X = 66;

    private Signing() {
    }

    static Ed25519PrivateKeyParameters key(int seed) {
        byte[] raw = new byte[32];
        Arrays.fill(raw, (byte) seed);
        return new Ed25519PrivateKeyParameters(raw, 0);
    }

    static String pub(int seed) {
        return Codec.base64(key(seed).generatePublicKey().getEncoded());
    }

    static Object json(String text) {
        try {
            return Json.parse(text.getBytes(StandardCharsets.UTF_8), Long.MAX_VALUE);
        } catch (BundleException e) {
            throw new IllegalArgumentException(e);
        }
    }

    /** A document of {@code version} with {@code policy} (JSON), valid from/to the given times. */
    static byte[] document(long version, String policy, long issued, long expires, int... signers) {
        Map<String, Object> signed = new LinkedHashMap<String, Object>();
        signed.put("format", "tlspin-bundle/1");
        signed.put("version", Long.valueOf(version));
        signed.put("issued_at", Codec.formatTime(issued));
        signed.put("expires_at", Codec.formatTime(expires));
        signed.put("policy", json(policy));
        byte[] message = Canonical.bytes(signed);
        List<Object> sigs = new ArrayList<Object>();
        for (int seed : signers) {
            Ed25519Signer signer = new Ed25519Signer();
            signer.init(true, key(seed));
            signer.update(message, 0, message.length);
            Map<String, Object> entry = new LinkedHashMap<String, Object>();
            entry.put("keyid", Codec.hex(Codec.sha256(key(seed).generatePublicKey().getEncoded())));
            entry.put("sig", Codec.base64(signer.generateSignature()));
            sigs.add(entry);
        }
        Map<String, Object> doc = new LinkedHashMap<String, Object>();
        doc.put("signed", signed);
        doc.put("signatures", sigs);
        return Canonical.bytes(doc);
    }
}
