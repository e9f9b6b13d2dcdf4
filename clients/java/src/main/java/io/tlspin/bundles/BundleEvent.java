package io.tlspin.bundles;

/**
 * Something the observers of a {@link BundleUpdater} should know (as tlspin's Python
 * {@code BundleEvent}). Kinds: {@code updated} (new pins in force), {@code rejected} (a served
 * bundle broke a rule: see {@link #reason}), {@code fetch-failed}, {@code store-fallback} (a stored
 * file was refused at start-up; an older bundle or the embedded policy is in force),
 * {@code store-error} (an accepted bundle could not be written), {@code expired} (the embedded
 * policy is in force, with the expired bundle's deny pins), and {@code pin-failure} (a connection
 * failed the pins: refused, or only reported by a report-only rule).
 */
public final class BundleEvent {
    /** The kind, one of those above. */
    public final String kind;
    /** What happened, for people. */
    public final String message;
    /** The update URL. */
    public final String url;
    /** When, in milliseconds since the epoch. */
    public final long timeMillis;
    /** The rule that refused (a {@link BundleException} reason), or null. */
    public final String reason;
    /** The version concerned (served or stored), or null. */
    public final Long version;
    /** The bundle version in force afterwards; null while the embedded policy is. */
    public final Long inForce;

    BundleEvent(String kind, String message, String url, long timeMillis, String reason, Long version, Long inForce) {
        this.kind = kind;
        this.message = message;
        this.url = url;
        this.timeMillis = timeMillis;
        this.reason = reason;
        this.version = version;
        this.inForce = inForce;
    }

    /** Receives {@link BundleEvent}s; one that throws is ignored. */
    public interface Observer {
        /** Called in the thread that caused the event (a refresh, or a request). */
        void onEvent(BundleEvent event);
    }

    @Override
    public String toString() {
        return "BundleEvent(" + kind + (reason != null ? ", " + reason : "") + ": " + message + ")";
    }
}
