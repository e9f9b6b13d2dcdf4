package io.tlspin.bundles;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Pins for one or more host patterns (one {@code rule} of a policy, §9): any pin of a matching
 * rule in the verified chain passes, a deny pin anywhere in it fails.
 */
public final class PinRule {
    /** A pin's role, note and not_after date (days since the epoch), as the bundle gave them. */
    static final class Info {
        final String role;
        final String note;
        final Long notAfter;

        Info(String role, String note, Long notAfter) {
            this.role = role;
            this.note = note;
            this.notAfter = notAfter;
        }
    }

    final List<HostPattern> hosts;
    final List<Pin> pins;
    final List<Pin> deny;
    final boolean includeSubdomains;
    /** The last day the rule is enforced (days since the epoch), or null. */
    final Long expires;
    final boolean report;
    final String reportUri;
    final Map<Pin, Info> info;

    PinRule(List<HostPattern> hosts, List<Pin> pins, List<Pin> deny, boolean includeSubdomains,
            Long expires, boolean report, String reportUri, Map<Pin, Info> info) {
        this.hosts = Collections.unmodifiableList(new ArrayList<HostPattern>(hosts));
        this.pins = Collections.unmodifiableList(new ArrayList<Pin>(pins));
        this.deny = Collections.unmodifiableList(new ArrayList<Pin>(deny));
        this.includeSubdomains = includeSubdomains;
        this.expires = expires;
        this.report = report;
        this.reportUri = reportUri;
        this.info = Collections.unmodifiableMap(new LinkedHashMap<Pin, Info>(info));
    }

    /** The host patterns, e.g. {@code api.example.com} or {@code **.cdn.example.com}. */
    public List<HostPattern> hosts() {
        return hosts;
    }

    /** The accepted pins. */
    public List<Pin> pins() {
        return pins;
    }

    /** Pins that must never appear in the verified chain. */
    public List<Pin> deny() {
        return deny;
    }

    /** True for a report-only rule: failures are reported, never refused. */
    public boolean isReportOnly() {
        return report;
    }

    /** True if the rule covers the canonical host name. */
    boolean matches(String host) {
        for (HostPattern pattern : hosts) {
            if (pattern.matches(host, includeSubdomains)) {
                return true;
            }
        }
        return false;
    }

    /** True once the {@code expires} day has passed (the rule is enforced through that day). */
    boolean expired(long today) {
        return expires != null && today > expires.longValue();
    }

    /** The rule as {@code tlspin.policyfile.to_data} writes it. */
    Map<String, Object> toValue() {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        List<Object> hostTexts = new ArrayList<Object>();
        for (HostPattern host : hosts) {
            hostTexts.add(host.toString());
        }
        out.put("hosts", hostTexts);
        out.put("pins", entries(pins));
        if (includeSubdomains) {
            out.put("include_subdomains", Boolean.TRUE);
        }
        if (expires != null) {
            out.put("expires", Codec.formatDate(expires.longValue()));
        }
        if (report) {
            out.put("mode", "report");
        }
        if (!deny.isEmpty()) {
            out.put("deny", entries(deny));
        }
        if (reportUri != null) {
            out.put("report_uri", reportUri);
        }
        return out;
    }

    private List<Object> entries(List<Pin> list) {
        List<Object> out = new ArrayList<Object>();
        for (Pin pin : list) {
            Info meta = info.get(pin);
            if (meta == null) {
                out.add(pin.toString());
                continue;
            }
            Map<String, Object> entry = new LinkedHashMap<String, Object>();
            entry.put("pin", pin.toString());
            if (meta.role != null) {
                entry.put("role", meta.role);
            }
            if (meta.note != null) {
                entry.put("note", meta.note);
            }
            if (meta.notAfter != null) {
                entry.put("not_after", Codec.formatDate(meta.notAfter.longValue()));
            }
            out.add(entry);
        }
        return out;
    }
}
