package io.tlspin.bundles;

import java.net.IDN;
import java.nio.charset.StandardCharsets;
import java.security.cert.CertificateEncodingException;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * An immutable pin policy: the {@code policy} member of a bundle (docs/bundle-format.md §9), or
 * the fallback policy an application embeds, in the same JSON schema.
 */
public final class Policy {
    private static final List<String> TOP = Arrays.asList("on_expiry", "rule");
    private static final List<String> RULE = Arrays.asList(
            "hosts", "pins", "include_subdomains", "expires", "mode", "deny", "report_uri");
    private static final List<String> FALLBACK_RULE = Arrays.asList(
            "hosts", "pins", "include_subdomains", "expires", "mode", "deny", "report_uri", "ports");
    private static final List<String> PIN = Arrays.asList("pin", "role", "note", "not_after");
    private static final List<String> ROLES = Arrays.asList("leaf", "intermediate", "root", "backup");

    private final List<PinRule> rules;
    private final boolean enforceExpired;

    Policy(List<PinRule> rules, boolean enforceExpired) {
        this.rules = Collections.unmodifiableList(new ArrayList<PinRule>(rules));
        this.enforceExpired = enforceExpired;
    }

    /** The rules, in order. */
    public List<PinRule> rules() {
        return rules;
    }

    /** True when rules stay enforced past their {@code expires} day ({@code on_expiry = "enforce"}). */
    public boolean enforcesExpiredRules() {
        return enforceExpired;
    }

    /**
     * Read the embedded fallback policy: the bundle JSON schema (canonical values, §9), as
     * {@code tlspin export --format json} writes it. Unlike a bundle's policy it may give a rule
     * {@code ports} (an array of port numbers, or one), which tlspin's tools use to know where to
     * connect; pinning is per host name, so they are checked and ignored.
     *
     * @throws IllegalArgumentException the text is not such a policy; the message says where
     */
    public static Policy fromJson(String json) {
        try {
            return read(Json.parse(json.getBytes(StandardCharsets.UTF_8), Long.MAX_VALUE), true);
        } catch (BundleException e) {
            throw new IllegalArgumentException(e.detail(), e);
        } catch (HostPattern.PolicyProblem e) {
            throw new IllegalArgumentException("invalid policy: " + e.getMessage(), e);
        }
    }

    /** This policy with its rules enforced even past {@code expires} (the update channel's view). */
    Policy enforcingExpired() {
        return enforceExpired ? this : new Policy(rules, true);
    }

    Policy withRules(List<PinRule> more) {
        List<PinRule> all = new ArrayList<PinRule>(rules);
        all.addAll(more);
        return new Policy(all, enforceExpired);
    }

    /** The rules covering {@code host} (lower case, no trailing dot, IPv6 without brackets). */
    public List<PinRule> rulesFor(String host) {
        String canonical = canonicalHost(host);
        List<PinRule> out = new ArrayList<PinRule>();
        for (PinRule rule : rules) {
            if (rule.matches(canonical)) {
                out.add(rule);
            }
        }
        return out;
    }

    /**
     * The canonical form of a host name (§9), as tlspin's Python {@code canonical_host} gives it
     * for the names a URL can hold: lower case, one trailing dot and IPv6 brackets dropped, IPv6
     * in RFC 5952 form, an IPv4-mapped address as its IPv4 address, an IDN as A-labels (with
     * java.net.IDN, as OkHttp's {@code HttpUrl} converts them).
     */
    static String canonicalHost(String host) {
        String h = host.toLowerCase(Locale.ROOT);
        if (h.endsWith(".")) {
            h = h.substring(0, h.length() - 1);
        }
        if (h.startsWith("[") && h.endsWith("]")) {
            h = h.substring(1, h.length() - 1);
        }
        if (h.indexOf(':') >= 0) {
            int[] groups = HostPattern.ipv6Groups(h);
            if (groups == null) {
                return h;
            }
            if (groups[0] == 0 && groups[1] == 0 && groups[2] == 0 && groups[3] == 0 && groups[4] == 0
                    && groups[5] == 0xffff) {
                // ::ffff:a.b.c.d reaches the IPv4 host: same host, same pins.
                return (groups[6] >> 8) + "." + (groups[6] & 0xff) + "." + (groups[7] >> 8) + "." + (groups[7] & 0xff);
            }
            return HostPattern.format(groups);
        }
        for (int i = 0; i < h.length(); i++) {
            if (h.charAt(i) > 0x7f) {
                try {
                    return IDN.toASCII(h, IDN.ALLOW_UNASSIGNED).toLowerCase(Locale.ROOT);
                } catch (IllegalArgumentException e) {
                    return h; // not a name any rule can hold
                }
            }
        }
        return h;
    }

    /** True if an enforced rule covers {@code host} (expired or not): the update host must be. */
    boolean pinsEnforced(String host) {
        for (PinRule rule : rulesFor(host)) {
            if (!rule.report) {
                return true;
            }
        }
        return false;
    }

    /**
     * Check a verified chain (leaf first) for {@code host} on day {@code today} (days since the
     * epoch, UTC), as tlspin's engine does: an enforced rule in force fails when a deny pin of
     * the enforced rules matches, or else when none of their pins does; report-only rules only
     * report. A host no rule covers passes.
     */
    public Verdict check(String host, List<X509Certificate> chain, long today) {
        List<PinRule> enforce = new ArrayList<PinRule>();
        List<PinRule> report = new ArrayList<PinRule>();
        for (PinRule rule : rulesFor(host)) {
            if (!enforceExpired && rule.expired(today)) {
                continue;
            }
            (rule.report ? report : enforce).add(rule);
        }
        if (enforce.isEmpty() && report.isEmpty()) {
            return Verdict.pass(host);
        }
        byte[][] spki = new byte[chain.size()][];
        byte[][] cert = new byte[chain.size()][];
        for (int i = 0; i < chain.size(); i++) {
            spki[i] = Pin.spkiSha256(chain.get(i));
            try {
                cert[i] = Codec.sha256(chain.get(i).getEncoded());
            } catch (CertificateEncodingException e) {
                cert[i] = new byte[0];
            }
        }
        String enforced = failure(enforce, spki, cert);
        String reported = failure(report, spki, cert);
        return new Verdict(host, enforced, reported, enforce, report);
    }

    private static String failure(List<PinRule> rules, byte[][] spki, byte[][] cert) {
        if (rules.isEmpty()) {
            return null;
        }
        for (PinRule rule : rules) {
            for (Pin pin : rule.deny) {
                for (int i = 0; i < spki.length; i++) {
                    if (pin.matches(spki[i], cert[i])) {
                        return "denied";
                    }
                }
            }
        }
        for (PinRule rule : rules) {
            for (Pin pin : rule.pins) {
                for (int i = 0; i < spki.length; i++) {
                    if (pin.matches(spki[i], cert[i])) {
                        return null;
                    }
                }
            }
        }
        return "mismatch";
    }

    /** The policy as {@code tlspin.policyfile.to_data(dates_as_strings=True)} writes it. */
    Map<String, Object> toValue() {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        if (enforceExpired) {
            out.put("on_expiry", "enforce");
        }
        List<Object> list = new ArrayList<Object>();
        for (PinRule rule : rules) {
            list.add(rule.toValue());
        }
        out.put("rule", list);
        return out;
    }

    /** The policy as JSON (the schema it was read from; canonical member order). */
    public String toJson() {
        return new String(Canonical.bytes(toValue()), StandardCharsets.UTF_8);
    }

    // -- reading (§9) ----------------------------------------------------------------------

    static Policy parse(Object data) throws BundleException {
        try {
            return read(data, false);
        } catch (HostPattern.PolicyProblem e) {
            throw new BundleException(BundleException.POLICY, "invalid policy: " + e.getMessage());
        }
    }

    @SuppressWarnings("unchecked")
    private static Policy read(Object data, boolean fallback) throws HostPattern.PolicyProblem {
        if (!(data instanceof Map)) {
            throw new HostPattern.PolicyProblem("a policy must be an object, found " + Codec.kind(data));
        }
        Map<String, Object> top = (Map<String, Object>) data;
        unknown(top, TOP, "the policy");
        boolean enforce = false;
        if (top.containsKey("on_expiry")) {
            Object v = top.get("on_expiry");
            if (!"fail-open".equals(v) && !"enforce".equals(v)) {
                throw new HostPattern.PolicyProblem("on_expiry must be 'fail-open' or 'enforce', found " + Codec.shown(v));
            }
            enforce = "enforce".equals(v);
        }
        Object raw = top.containsKey("rule") ? top.get("rule") : new ArrayList<Object>();
        if (!(raw instanceof List)) {
            throw new HostPattern.PolicyProblem("'rule' must be an array, found " + Codec.kind(raw));
        }
        List<PinRule> rules = new ArrayList<PinRule>();
        int index = 0;
        for (Object item : (List<Object>) raw) {
            index++;
            try {
                rules.add(rule(item, fallback));
            } catch (HostPattern.PolicyProblem e) {
                throw new HostPattern.PolicyProblem("rule #" + index + ": " + e.getMessage());
            }
        }
        return new Policy(rules, enforce);
    }

    private static void unknown(Map<String, Object> map, List<String> allowed, String what)
            throws HostPattern.PolicyProblem {
        for (String name : map.keySet()) {
            if (!allowed.contains(name)) {
                throw new HostPattern.PolicyProblem(what + " has the unknown member " + Codec.shown(name)
                        + "; expected " + allowed);
            }
        }
    }

    @SuppressWarnings("unchecked")
    private static PinRule rule(Object item, boolean fallback) throws HostPattern.PolicyProblem {
        if (!(item instanceof Map)) {
            throw new HostPattern.PolicyProblem("a rule must be an object, found " + Codec.kind(item));
        }
        Map<String, Object> raw = (Map<String, Object>) item;
        unknown(raw, fallback ? FALLBACK_RULE : RULE, "the rule");
        if (raw.containsKey("ports")) {
            ports(raw.get("ports"));
        }
        for (String need : new String[] {"hosts", "pins"}) {
            if (!raw.containsKey(need)) {
                throw new HostPattern.PolicyProblem("the rule has no '" + need + "'");
            }
        }
        Object hostsValue = raw.get("hosts");
        List<Object> hostList = hostsValue instanceof String
                ? Collections.singletonList(hostsValue) : hostsValue instanceof List ? (List<Object>) hostsValue : null;
        if (hostList == null) {
            throw new HostPattern.PolicyProblem("'hosts' must be an array of strings");
        }
        for (Object h : hostList) {
            if (!(h instanceof String)) {
                throw new HostPattern.PolicyProblem("'hosts' must be an array of strings, found " + Codec.kind(h));
            }
        }
        Map<Pin, PinRule.Info> info = new LinkedHashMap<Pin, PinRule.Info>();
        List<Pin> pins = pins(raw.get("pins"), "pins", info);
        List<Pin> deny = raw.containsKey("deny") ? pins(raw.get("deny"), "deny", info) : new ArrayList<Pin>();
        Object sub = raw.containsKey("include_subdomains") ? raw.get("include_subdomains") : Boolean.FALSE;
        if (!(sub instanceof Boolean)) {
            throw new HostPattern.PolicyProblem("'include_subdomains' must be true or false, found " + Codec.shown(sub));
        }
        Object mode = raw.containsKey("mode") ? raw.get("mode") : "enforce";
        if (!"enforce".equals(mode) && !"report".equals(mode)) {
            throw new HostPattern.PolicyProblem("'mode' must be 'enforce' or 'report', found " + Codec.shown(mode));
        }
        Object uri = raw.containsKey("report_uri") ? raw.get("report_uri") : null;
        if (uri != null && !(uri instanceof String
                && (((String) uri).startsWith("https://") || ((String) uri).startsWith("http://")))) {
            throw new HostPattern.PolicyProblem("'report_uri' must be an http(s) URL, found " + Codec.shown(uri));
        }
        if (uri != null && hasControl((String) uri)) {
            // Exports write it into headers, XML and plists, where a newline or control character
            // ends a header line or breaks the document: refused as tlspin's Python refuses it.
            throw new HostPattern.PolicyProblem("'report_uri' must be a URL without spaces or control characters "
                    + "(percent-encode them, e.g. %20, %7F), found " + Codec.shown(uri));
        }
        Long expires = date(raw.get("expires"), "expires");
        boolean includeSubdomains = ((Boolean) sub).booleanValue();
        Set<HostPattern> hosts = new LinkedHashSet<HostPattern>();
        for (Object h : hostList) {
            hosts.add(HostPattern.parse((String) h, includeSubdomains));
        }
        if (hosts.isEmpty()) {
            throw new HostPattern.PolicyProblem("a rule needs at least one host pattern, found none");
        }
        if (pins.isEmpty()) {
            throw new HostPattern.PolicyProblem("the rule has no pins; expected at least one");
        }
        return new PinRule(new ArrayList<HostPattern>(hosts), pins, deny, includeSubdomains, expires,
                "report".equals(mode), (String) uri, info);
    }

    /** True if {@code text} holds a space, a C0 or C1 control character, or DEL (§9). */
    static boolean hasControl(String text) {
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c <= 0x20 || (c >= 0x7f && c <= 0x9f)) {
                return true;
            }
        }
        return false;
    }

    /** A fallback rule's {@code ports}, as a policy file has them: checked, then ignored. */
    @SuppressWarnings("unchecked")
    private static void ports(Object value) throws HostPattern.PolicyProblem {
        List<Object> list = value instanceof List ? (List<Object>) value : Collections.singletonList(value);
        for (Object port : list) {
            if (!(port instanceof Long) || ((Long) port).longValue() < 1 || ((Long) port).longValue() > 65535) {
                throw new HostPattern.PolicyProblem("'ports' must be a list of port numbers (1 to 65535), found "
                        + Codec.shown(value));
            }
        }
    }

    /** A pin list, repeats dropped (first place kept); metadata objects fill {@code info}. */
    @SuppressWarnings("unchecked")
    private static List<Pin> pins(Object value, String key, Map<Pin, PinRule.Info> info)
            throws HostPattern.PolicyProblem {
        if (!(value instanceof List)) {
            throw new HostPattern.PolicyProblem("'" + key + "' must be an array of pins, found " + Codec.kind(value));
        }
        Set<Pin> out = new LinkedHashSet<Pin>();
        for (Object item : (List<Object>) value) {
            if (item instanceof Map) {
                Map<String, Object> entry = (Map<String, Object>) item;
                unknown(entry, PIN, "a pin object");
                if (!entry.containsKey("pin")) {
                    throw new HostPattern.PolicyProblem("a pin object needs a 'pin' member");
                }
                Pin pin = pin(entry.get("pin"));
                Object role = entry.containsKey("role") ? entry.get("role") : Json.NULL;
                Object note = entry.containsKey("note") ? entry.get("note") : Json.NULL;
                if (role != Json.NULL && !ROLES.contains(role)) {
                    throw new HostPattern.PolicyProblem("pin role must be one of " + ROLES + ", found " + Codec.shown(role));
                }
                if (note != Json.NULL && !(note instanceof String)) {
                    throw new HostPattern.PolicyProblem("pin note must be a string, found " + Codec.kind(note));
                }
                Long notAfter = date(entry.get("not_after"), "not_after");
                info.put(pin, new PinRule.Info(role == Json.NULL ? null : (String) role,
                        note == Json.NULL ? null : (String) note, notAfter));
                out.add(pin);
            } else {
                out.add(pin(item));
            }
        }
        return new ArrayList<Pin>(out);
    }

    private static Pin pin(Object value) throws HostPattern.PolicyProblem {
        Pin pin = value instanceof String ? Pin.parseCanonical((String) value) : null;
        if (pin == null) {
            throw new HostPattern.PolicyProblem("pin " + Codec.shown(value) + " is not 'sha256/' + canonical "
                    + "base64 of 32 bytes, nor 'cert-sha256/' + 64 lower-case hex digits");
        }
        return pin;
    }

    /** Absent or null: no date; else YYYY-MM-DD exactly. */
    private static Long date(Object value, String key) throws HostPattern.PolicyProblem {
        if (value == null || value == Json.NULL) {
            return null;
        }
        Long day = value instanceof String ? Codec.date((String) value) : null;
        if (day == null) {
            throw new HostPattern.PolicyProblem("'" + key + "' must be a date YYYY-MM-DD, found " + Codec.shown(value));
        }
        return day;
    }
}
