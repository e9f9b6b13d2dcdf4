package io.tlspin.bundles;

/** The outcome of one {@link BundleUpdater#refresh()}. */
public final class RefreshResult {
    /** {@code updated}, {@code unchanged}, {@code not-modified}, {@code rejected} or {@code failed}. */
    public final String outcome;
    /** The bundle version in force afterwards; null while the embedded policy is. */
    public final Long version;
    /** The rule that refused the served bundle, for {@code rejected}; else null. */
    public final String reason;
    /** Details, for people. */
    public final String message;

    RefreshResult(String outcome, Long version, String reason, String message) {
        this.outcome = outcome;
        this.version = version;
        this.reason = reason;
        this.message = message;
    }

    /** True when the update channel worked (updated, unchanged or not modified). */
    public boolean ok() {
        return "updated".equals(outcome) || "unchanged".equals(outcome) || "not-modified".equals(outcome);
    }

    @Override
    public String toString() {
        return "RefreshResult(" + outcome + ", version " + version + (reason != null ? ", " + reason : "")
                + (message.isEmpty() ? "" : ": " + message) + ")";
    }
}
