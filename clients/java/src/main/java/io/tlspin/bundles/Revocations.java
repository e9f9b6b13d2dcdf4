package io.tlspin.bundles;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Deny pins that outlive their bundle (as tlspin.bundles.revocations): when the newest accepted
 * bundle expires and the embedded fallback policy takes over, its enforced deny pins stay in
 * force wherever a fallback rule and a denying rule cover the same hosts, so a key a bundle
 * revoked is not accepted again because the fallback still pins it. No pin is ever added.
 */
final class Revocations {
    private Revocations() {
    }

    private static HostPattern.Kind kind(HostPattern p, boolean includeSubdomains) {
        return includeSubdomains && p.kind == HostPattern.Kind.EXACT ? HostPattern.Kind.ANY_DEPTH : p.kind;
    }

    /** The pattern covering exactly the hosts both cover, or null. */
    static HostPattern intersect(HostPattern a, boolean aSub, HostPattern b, boolean bSub) {
        HostPattern.Kind ka = kind(a, aSub);
        HostPattern.Kind kb = kind(b, bSub);
        if (ka == HostPattern.Kind.EXACT) {
            return b.matches(a.base, bSub) ? a : null;
        }
        if (kb == HostPattern.Kind.EXACT) {
            return a.matches(b.base, aSub) ? b : null;
        }
        if (a.base.equals(b.base)) {
            boolean both = ka == HostPattern.Kind.ANY_DEPTH && kb == HostPattern.Kind.ANY_DEPTH;
            return new HostPattern(both ? HostPattern.Kind.ANY_DEPTH : HostPattern.Kind.ONE_LABEL, a.base, false);
        }
        if (b.base.endsWith("." + a.base)) {
            HostPattern t = a;
            a = b;
            b = t;
            HostPattern.Kind tk = ka;
            ka = kb;
            kb = tk;
        }
        if (!a.base.endsWith("." + b.base)) {
            return null;
        }
        // a is deeper than b.
        if (kb == HostPattern.Kind.ANY_DEPTH) {
            return new HostPattern(ka, a.base, false);
        }
        String head = a.base.substring(0, a.base.length() - b.base.length() - 1);
        if (ka == HostPattern.Kind.ANY_DEPTH && head.indexOf('.') < 0) {
            return new HostPattern(HostPattern.Kind.EXACT, a.base, false);
        }
        return null;
    }

    /** {@code fallback} with the enforced deny pins of {@code source} where both apply. */
    static Policy withDenies(Policy fallback, Policy source) {
        if (source == null) {
            return fallback;
        }
        List<PinRule> denying = new ArrayList<PinRule>();
        for (PinRule rule : source.rules()) {
            if (!rule.report && !rule.deny.isEmpty()) {
                denying.add(rule);
            }
        }
        List<PinRule> added = new ArrayList<PinRule>();
        for (PinRule rule : fallback.rules()) {
            for (PinRule denyRule : denying) {
                Map<String, HostPattern> hosts = new LinkedHashMap<String, HostPattern>();
                for (HostPattern mine : rule.hosts) {
                    for (HostPattern theirs : denyRule.hosts) {
                        HostPattern found = intersect(mine, rule.includeSubdomains, theirs, denyRule.includeSubdomains);
                        if (found != null) {
                            hosts.put(found.toString(), found);
                        }
                    }
                }
                if (hosts.isEmpty()) {
                    continue;
                }
                List<Pin> deny = new ArrayList<Pin>(rule.deny);
                for (Pin pin : denyRule.deny) {
                    if (!deny.contains(pin)) {
                        deny.add(pin);
                    }
                }
                added.add(new PinRule(new ArrayList<HostPattern>(hosts.values()), rule.pins, deny, false,
                        rule.expires, rule.report, rule.reportUri, rule.info));
            }
        }
        return added.isEmpty() ? fallback : fallback.withRules(added);
    }
}
