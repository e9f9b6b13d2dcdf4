package io.tlspin.bundles;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * One signed bundle, parsed but not yet verified: the {@code signed} object and its detached
 * signatures (docs/bundle-format.md §2). {@link Verifier} decides whether to accept it.
 */
public final class Bundle {
    static final String FORMAT = "tlspin-bundle/1";
    static final int MAX_SIGNATURES = 32;
    private static final Pattern KEY_ID = Pattern.compile("[0-9a-f]{64}");
    private static final String[] ENVELOPE = {"signed", "signatures"};
    private static final String[] SIGNED = {"format", "version", "issued_at", "expires_at", "policy", "signing_keys"};
    private static final String[] SIGNED_REQUIRED = {"format", "version", "issued_at", "expires_at", "policy"};

    /** One detached signature: the signer's key id and the 64 signature bytes. */
    static final class Signature {
        final String keyId;
        final byte[] sig;

        Signature(String keyId, byte[] sig) {
            this.keyId = keyId;
            this.sig = sig;
        }
    }

    private final long version;
    private final long issuedAt;
    private final long expiresAt;
    private final Map<String, Object> signed;
    private final KeySet signingKeys;
    private final List<Signature> signatures;
    private final byte[] canonical;

    private Bundle(long version, long issuedAt, long expiresAt, Map<String, Object> signed,
            KeySet signingKeys, List<Signature> signatures) {
        this.version = version;
        this.issuedAt = issuedAt;
        this.expiresAt = expiresAt;
        this.signed = signed;
        this.signingKeys = signingKeys;
        this.signatures = Collections.unmodifiableList(signatures);
        this.canonical = Canonical.bytes(signed);
    }

    /** The version; accepted versions only grow. */
    public long version() {
        return version;
    }

    /** When it was signed, in seconds since the epoch. */
    public long issuedAt() {
        return issuedAt;
    }

    /** From this instant on (seconds since the epoch) it must not be used. */
    public long expiresAt() {
        return expiresAt;
    }

    /** The key set this bundle hands signing over to, or null. */
    public KeySet signingKeys() {
        return signingKeys;
    }

    /** Hex SHA-256 of the canonical bytes of {@code signed} (what the signatures cover). */
    public String canonicalSha256() {
        return Codec.hex(Codec.sha256(canonical));
    }

    byte[] canonical() {
        return canonical.clone();
    }

    boolean sameContent(Bundle other) {
        return Arrays.equals(canonical, other.canonical);
    }

    List<Signature> signatures() {
        return signatures;
    }

    Object policyData() {
        return signed.get("policy");
    }

    /** The {@code {"signed", "signatures"}} object, for storage. */
    Map<String, Object> envelope() {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("signed", signed);
        List<Object> sigs = new ArrayList<Object>();
        for (Signature s : signatures) {
            Map<String, Object> entry = new LinkedHashMap<String, Object>();
            entry.put("keyid", s.keyId);
            entry.put("sig", Codec.base64(s.sig));
            sigs.add(entry);
        }
        out.put("signatures", sigs);
        return out;
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> object(Object value, String what, String[] allowed, String[] required)
            throws BundleException {
        if (!(value instanceof Map)) {
            throw new BundleException(BundleException.SCHEMA,
                    what + " must be a JSON object, found " + Codec.kind(value));
        }
        Map<String, Object> map = (Map<String, Object>) value;
        List<String> known = Arrays.asList(allowed);
        List<String> unknown = new ArrayList<String>();
        for (String name : map.keySet()) {
            if (!known.contains(name)) {
                unknown.add(Codec.shown(name));
            }
        }
        if (!unknown.isEmpty()) {
            Collections.sort(unknown);
            throw new BundleException(BundleException.SCHEMA,
                    what + " has unknown member(s) " + unknown + "; expected " + known);
        }
        for (String name : required) {
            if (!map.containsKey(name)) {
                throw new BundleException(BundleException.SCHEMA, what + " lacks the member " + name);
            }
        }
        return map;
    }

    static long integer(Object value, String what, long minimum) throws BundleException {
        if (!(value instanceof Long)) {
            throw new BundleException(BundleException.SCHEMA,
                    what + " must be an integer, found " + Codec.kind(value));
        }
        long v = ((Long) value).longValue();
        if (v < minimum) {
            throw new BundleException(BundleException.SCHEMA,
                    what + " must be at least " + minimum + ", found " + v);
        }
        return v;
    }

    /** Check one {@code {"signed", "signatures"}} object against §2 in the order of §3.5. */
    @SuppressWarnings("unchecked")
    static Bundle parse(Object value, String what) throws BundleException {
        Map<String, Object> envelope = object(value, what, ENVELOPE, ENVELOPE);
        Object rawSigned = envelope.get("signed");
        if (rawSigned instanceof Map && ((Map<String, Object>) rawSigned).containsKey("format")
                && !FORMAT.equals(((Map<String, Object>) rawSigned).get("format"))) {
            throw new BundleException(BundleException.FORMAT, what + " has format "
                    + Codec.shown(((Map<String, Object>) rawSigned).get("format"))
                    + "; this verifier implements " + FORMAT);
        }
        Map<String, Object> signed = object(rawSigned, what + ": signed", SIGNED, SIGNED_REQUIRED);
        long version = integer(signed.get("version"), what + ": version", 1);
        long issued = Codec.time(signed.get("issued_at"), what + ": issued_at");
        long expires = Codec.time(signed.get("expires_at"), what + ": expires_at");
        if (expires <= issued) {
            throw new BundleException(BundleException.SCHEMA,
                    what + ": expires_at must be after issued_at");
        }
        if (!(signed.get("policy") instanceof Map)) {
            throw new BundleException(BundleException.POLICY,
                    what + ": policy must be an object, found " + Codec.kind(signed.get("policy")));
        }
        KeySet keys = null;
        if (signed.containsKey("signing_keys")) {
            keys = keySet(signed.get("signing_keys"), what + ": signing_keys");
        }
        Object rawSigs = envelope.get("signatures");
        if (!(rawSigs instanceof List) || ((List<Object>) rawSigs).size() > MAX_SIGNATURES) {
            throw new BundleException(BundleException.SCHEMA, what + ": signatures must be an array of at most "
                    + MAX_SIGNATURES + ", found " + Codec.kind(rawSigs));
        }
        List<Signature> sigs = new ArrayList<Signature>();
        int index = 0;
        for (Object item : (List<Object>) rawSigs) {
            String where = what + ": signatures[" + index++ + "]";
            Map<String, Object> entry = object(item, where, new String[] {"keyid", "sig"},
                    new String[] {"keyid", "sig"});
            Object keyId = entry.get("keyid");
            if (!(keyId instanceof String) || !KEY_ID.matcher((String) keyId).matches()) {
                throw new BundleException(BundleException.SCHEMA,
                        where + ".keyid must be 64 lower-case hex digits, found " + Codec.shown(keyId));
            }
            sigs.add(new Signature((String) keyId, Codec.base64(entry.get("sig"), where + ".sig", 64)));
        }
        return new Bundle(version, issued, expires, signed, keys, sigs);
    }

    @SuppressWarnings("unchecked")
    private static KeySet keySet(Object value, String what) throws BundleException {
        String[] members = {"keys", "threshold"};
        Map<String, Object> data = object(value, what, members, members);
        Object keys = data.get("keys");
        if (!(keys instanceof List) || ((List<Object>) keys).isEmpty()
                || ((List<Object>) keys).size() > KeySet.MAX_KEYS) {
            throw new BundleException(BundleException.SCHEMA, what + ".keys must be an array of 1 to "
                    + KeySet.MAX_KEYS + " keys, found " + Codec.kind(keys));
        }
        List<BundleKey> parsed = new ArrayList<BundleKey>();
        int i = 0;
        for (Object key : (List<Object>) keys) {
            String where = what + ".keys[" + i++ + "]";
            // A served document is malformed, not a configuration error: schema, as in Python.
            parsed.add(BundleKey.of(Codec.base64(key, where, 32), where, BundleException.SCHEMA));
        }
        long threshold = integer(data.get("threshold"), what + ".threshold", 1);
        return KeySet.fromBundle(parsed, (int) Math.min(threshold, Integer.MAX_VALUE), what);
    }
}
