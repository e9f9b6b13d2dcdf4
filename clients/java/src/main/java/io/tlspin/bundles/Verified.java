package io.tlspin.bundles;

import java.util.Collections;
import java.util.Set;
import java.util.TreeSet;

/** A bundle that passed every acceptance rule (§8). */
public final class Verified {
    private final Bundle bundle;
    private final TrustState trust;
    private final Policy policy;
    private final Set<String> signers;
    private final boolean unchanged;

    Verified(Bundle bundle, TrustState trust, Policy policy, Set<String> signers, boolean unchanged) {
        this.bundle = bundle;
        this.trust = trust;
        this.policy = policy;
        this.signers = Collections.unmodifiableSet(new TreeSet<String>(signers));
        this.unchanged = unchanged;
    }

    /** The bundle. */
    public Bundle bundle() {
        return bundle;
    }

    /** The trust state after it (rotated if it or its chain handed signing over). */
    public TrustState trust() {
        return trust;
    }

    /** Its policy. */
    public Policy policy() {
        return policy;
    }

    /** Key ids of the trusted keys whose valid signatures it carries, sorted. */
    public Set<String> signers() {
        return signers;
    }

    /** True when it is the bundle accepted before (same version, same canonical bytes). */
    public boolean unchanged() {
        return unchanged;
    }

    /** The document to store: the bundle with the full rotation chain before it. */
    Document document() {
        return new Document(bundle, trust.chainBefore(bundle.version()));
    }
}
