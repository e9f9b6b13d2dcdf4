package io.tlspin.bundles;

import java.util.Collections;
import java.util.List;

/** What {@link Policy#check} found for one connection. */
public final class Verdict {
    private final String host;
    private final String failure;
    private final String reported;
    private final List<PinRule> enforced;
    private final List<PinRule> reportOnly;

    Verdict(String host, String failure, String reported, List<PinRule> enforced, List<PinRule> reportOnly) {
        this.host = host;
        this.failure = failure;
        this.reported = reported;
        this.enforced = Collections.unmodifiableList(enforced);
        this.reportOnly = Collections.unmodifiableList(reportOnly);
    }

    static Verdict pass(String host) {
        List<PinRule> none = Collections.emptyList();
        return new Verdict(host, null, null, none, none);
    }

    /** True unless an enforced rule failed. */
    public boolean ok() {
        return failure == null;
    }

    /** {@code "mismatch"} (no pin matched) or {@code "denied"} (a deny pin did); null when ok. */
    public String failure() {
        return failure;
    }

    /** The failure of the report-only rules (to report, never to refuse), or null. */
    public String reportOnlyFailure() {
        return reported;
    }

    /** The host checked. */
    public String host() {
        return host;
    }

    /** The enforced rules in force for the host. */
    public List<PinRule> enforcedRules() {
        return enforced;
    }

    /** The report-only rules in force for the host. */
    public List<PinRule> reportOnlyRules() {
        return reportOnly;
    }

    /** One line for people: what failed, for which host, against which pins. */
    public String describe() {
        if (failure == null && reported == null) {
            return "pins of " + host + " verified";
        }
        boolean deny = "denied".equals(failure != null ? failure : reported);
        List<PinRule> rules = failure != null ? enforced : reportOnly;
        StringBuilder pins = new StringBuilder();
        for (PinRule rule : rules) {
            for (Pin pin : deny ? rule.deny : rule.pins) {
                pins.append(pins.length() == 0 ? "" : ", ").append(pin);
            }
        }
        return "certificate pinning " + (failure != null ? "failure" : "failure (report-only)") + " for "
                + host + ": " + (deny ? "the verified chain holds a denied key (deny pins: "
                : "no key of the verified chain matches the pins (expected one of: ") + pins + ")";
    }
}
