package io.tlspin.bundles;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The keys a client accepts now (§6): the key set in force, the version of the bundle that named
 * it (0 for the application's own keys), and the rotation bundles adopted since, oldest first.
 */
public final class TrustState {
    private final KeySet keys;
    private final long version;
    private final List<Bundle> chain;

    TrustState(KeySet keys, long version, List<Bundle> chain) {
        this.keys = keys;
        this.version = version;
        this.chain = Collections.unmodifiableList(new ArrayList<Bundle>(chain));
    }

    /** The application's shipped keys: version 0, no rotations. */
    public static TrustState of(KeySet keys) {
        return new TrustState(keys, 0, Collections.<Bundle>emptyList());
    }

    /** The key set in force. */
    public KeySet keys() {
        return keys;
    }

    /** The version of the bundle that named the keys in force (0: the application's). */
    public long version() {
        return version;
    }

    List<Bundle> chain() {
        return chain;
    }

    /** The rotation bundles older than {@code version}: the chain a stored document carries. */
    List<Bundle> chainBefore(long version) {
        List<Bundle> out = new ArrayList<Bundle>();
        for (Bundle b : chain) {
            if (b.version() < version) {
                out.add(b);
            }
        }
        return out;
    }
}
