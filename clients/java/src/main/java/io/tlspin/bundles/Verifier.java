package io.tlspin.bundles;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/** The acceptance rules of docs/bundle-format.md §8, in their order. */
public final class Verifier {
    /** How far in the future {@code issued_at} may lie, by default (client clocks drift). */
    public static final long DEFAULT_CLOCK_SKEW_SECONDS = 300;

    private Verifier() {
    }

    /**
     * Apply every acceptance rule to {@code document}.
     *
     * @param trust the keys in force (the application's, or those a stored chain led to)
     * @param current the bundle accepted before (the newest ever: the anti-rollback floor), or null
     * @param minVersion versions up to this one are refused even without {@code current}
     * @param now seconds since the epoch
     * @param clockSkew how many seconds in the future {@code issued_at} may lie
     * @param checkTimes false skips expiry and issue time (re-reading a stored bundle)
     * @param pinnedHost if not null, the policy must pin this host with an enforced rule
     * @throws BundleException the first rule that fails, with its reason
     */
    public static Verified accept(Document document, TrustState trust, Bundle current, long minVersion,
            long now, long clockSkew, boolean checkTimes, String pinnedHost) throws BundleException {
        Bundle bundle = document.bundle();
        if (current != null && bundle.version() <= current.version()) {
            // Before any signature check: whatever they say, an old version is never taken.
            if (bundle.version() == current.version()) {
                if (bundle.sameContent(current)) {
                    return new Verified(bundle, trust, Policy.parse(bundle.policyData()),
                            validSigners(bundle, trust.keys()), true);
                }
                throw new BundleException(BundleException.EQUIVOCATION, "version " + bundle.version()
                        + " is already accepted with other content; a new bundle needs a new version");
            }
            throw new BundleException(BundleException.ROLLBACK, "version " + bundle.version()
                    + " is older than the accepted version " + current.version() + " (a rollback or replay)");
        }
        TrustState state = trust;
        int index = 0;
        for (Bundle entry : document.chain()) {
            if (entry.version() > state.version()) {
                state = rotate(state, entry, "key rotation chain[" + index + "]");
            }
            index++;
        }
        if (bundle.version() <= state.version()) {
            throw new BundleException(BundleException.ROLLBACK, "the bundle (version " + bundle.version()
                    + ") is not newer than the signing keys in force (named by version " + state.version() + ")");
        }
        Set<String> signers = require(bundle, state.keys(), "the bundle", BundleException.THRESHOLD);
        if (bundle.signingKeys() != null) {
            state = rotate(state, bundle, "the bundle");
        }
        if (bundle.version() <= minVersion) {
            throw new BundleException(BundleException.ROLLBACK, "version " + bundle.version()
                    + " is not above the minimum version " + minVersion + " (a rollback or replay)");
        }
        if (checkTimes) {
            if (now >= bundle.expiresAt()) {
                throw new BundleException(BundleException.EXPIRED, "the bundle (version " + bundle.version()
                        + ") expired at " + Codec.formatTime(bundle.expiresAt()));
            }
            if (bundle.issuedAt() > now + clockSkew) {
                throw new BundleException(BundleException.FUTURE, "the bundle (version " + bundle.version()
                        + ") claims to be issued at " + Codec.formatTime(bundle.issuedAt())
                        + ", later than now plus " + clockSkew + " s of clock skew");
            }
        }
        Policy policy = Policy.parse(bundle.policyData());
        if (pinnedHost != null && !policy.pinsEnforced(pinnedHost)) {
            throw new BundleException(BundleException.UNPINNED_UPDATE_HOST, "the policy has no enforced rule for "
                    + "the update host " + pinnedHost + "; accepting it would leave the next update unpinned");
        }
        return new Verified(bundle, state, policy, signers, false);
    }

    /** Key ids of {@code keys} with a valid signature on {@code bundle}; each key counts once. */
    static Set<String> validSigners(Bundle bundle, KeySet keys) {
        Set<String> found = new HashSet<String>();
        byte[] message = bundle.canonical();
        for (Bundle.Signature signature : bundle.signatures()) {
            if (found.contains(signature.keyId)) {
                continue;
            }
            BundleKey key = keys.byId(signature.keyId);
            if (key != null && key.verify(signature.sig, message)) {
                found.add(signature.keyId);
            }
        }
        return found;
    }

    private static Set<String> require(Bundle bundle, KeySet keys, String what, String reason)
            throws BundleException {
        Set<String> signers = validSigners(bundle, keys);
        if (signers.size() < keys.threshold()) {
            boolean known = false;
            for (Bundle.Signature s : bundle.signatures()) {
                known |= keys.byId(s.keyId) != null;
            }
            throw new BundleException(reason, what + " (version " + bundle.version() + ") needs valid signatures "
                    + "from " + keys.threshold() + " of " + keys.keys().size() + " trusted keys; found "
                    + (known ? signers.size() + " valid signature(s) from trusted keys" : "no signature from a trusted key"));
        }
        return signers;
    }

    private static TrustState rotate(TrustState state, Bundle bundle, String what) throws BundleException {
        require(bundle, state.keys(), what, BundleException.THRESHOLD);
        // The new keys must sign too: a typo in a key list cannot lock every client out.
        require(bundle, bundle.signingKeys(), what + ", by the keys it introduces,", BundleException.ROTATION);
        if (state.chain().size() >= Document.MAX_CHAIN) {
            throw new BundleException(BundleException.CHAIN, "more than " + Document.MAX_CHAIN
                    + " key rotations since the application's keys; ship the current keys in a new release");
        }
        List<Bundle> chain = new ArrayList<Bundle>(state.chain());
        chain.add(bundle);
        return new TrustState(bundle.signingKeys(), bundle.version(), chain);
    }
}
