package io.tlspin.bundles;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/** Keys trusted to sign bundles, and how many of them must sign (the threshold, §6). */
public final class KeySet {
    static final int MAX_KEYS = 16;

    private final List<BundleKey> keys;
    private final int threshold;

    private KeySet(List<BundleKey> keys, int threshold) {
        this.keys = Collections.unmodifiableList(new ArrayList<BundleKey>(keys));
        this.threshold = threshold;
    }

    /**
     * The keys an application ships (base64 text), and the threshold.
     *
     * @throws BundleException reason {@code key}: a key cannot be read, a key repeats, more than
     *     16 keys, or the threshold is not between 1 and the number of keys
     */
    public static KeySet of(List<String> keys, int threshold) throws BundleException {
        List<BundleKey> parsed = new ArrayList<BundleKey>();
        for (String key : keys) {
            parsed.add(BundleKey.parse(key));
        }
        String problem = problem(parsed, threshold);
        if (problem != null) {
            throw new BundleException(BundleException.KEY, problem);
        }
        return new KeySet(parsed, threshold);
    }

    /** A key set read from a bundle's {@code signing_keys}: problems are {@code schema}. */
    static KeySet fromBundle(List<BundleKey> keys, int threshold, String what) throws BundleException {
        String problem = problem(keys, threshold);
        if (problem != null) {
            throw new BundleException(BundleException.SCHEMA, what + ": " + problem);
        }
        return new KeySet(keys, threshold);
    }

    private static String problem(List<BundleKey> keys, int threshold) {
        if (keys.isEmpty()) {
            return "a key set needs at least one key, found none";
        }
        if (keys.size() > MAX_KEYS) {
            return "a key set holds at most " + MAX_KEYS + " keys, found " + keys.size();
        }
        if (new HashSet<BundleKey>(keys).size() != keys.size()) {
            return "a key set lists the same key twice";
        }
        if (threshold < 1 || threshold > keys.size()) {
            return "the threshold must be between 1 and the number of keys (" + keys.size()
                    + "), found " + threshold;
        }
        return null;
    }

    /** The keys, in order. */
    public List<BundleKey> keys() {
        return keys;
    }

    /** How many distinct keys of the set must sign. */
    public int threshold() {
        return threshold;
    }

    /** The key with this key id, or null. */
    BundleKey byId(String keyId) {
        for (BundleKey key : keys) {
            if (key.keyId().equals(keyId)) {
                return key;
            }
        }
        return null;
    }

    Set<String> keyIds() {
        Set<String> ids = new HashSet<String>();
        for (BundleKey key : keys) {
            ids.add(key.keyId());
        }
        return ids;
    }
}
