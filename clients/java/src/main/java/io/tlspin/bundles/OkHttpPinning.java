package io.tlspin.bundles;

import java.security.cert.Certificate;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

import javax.net.ssl.SSLPeerUnverifiedException;

import okhttp3.CertificatePinner;

/**
 * OkHttp's {@link CertificatePinner} for a policy, mapped as {@code tlspin export --format
 * okhttp-java} maps it, and the facts about the OkHttp in use that the mapping depends on.
 *
 * <p>What a {@code CertificatePinner} cannot express is left to {@link PinningInterceptor}:
 * deny pins, whole-certificate pins, report-only rules, and (on OkHttp 3, which has no
 * {@code **.} patterns) the names more than one label below a {@code **.} base.
 */
public final class OkHttpPinning {
    private static volatile Boolean anyDepth;

    private OkHttpPinning() {
    }

    /** One {@code CertificatePinner.Builder.add(pattern, pins...)} call. */
    public static final class Entry {
        /** The OkHttp pattern. */
        public final String pattern;
        /** Its {@code sha256/} pins. */
        public final List<String> pins;

        Entry(String pattern, List<String> pins) {
            this.pattern = pattern;
            this.pins = Collections.unmodifiableList(pins);
        }
    }

    /**
     * True when this OkHttp understands {@code **.} patterns (OkHttp 4.3 and later). OkHttp 3
     * reads {@code **.example.com} as a literal host name that never matches: found out by asking
     * a pinner, not by a version number.
     */
    public static boolean supportsAnyDepthPatterns() {
        Boolean known = anyDepth;
        if (known == null) {
            CertificatePinner probe;
            try {
                probe = new CertificatePinner.Builder()
                        .add("**.example.com", "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").build();
            } catch (IllegalArgumentException e) {
                probe = null;
            }
            boolean pinned = false;
            if (probe != null) {
                try {
                    probe.check("a.b.example.com", Collections.<Certificate>emptyList());
                } catch (SSLPeerUnverifiedException e) {
                    pinned = true;
                }
            }
            known = Boolean.valueOf(pinned);
            anyDepth = known;
        }
        return known.booleanValue();
    }

    /** 4 when {@code **.} patterns work, else 3: the {@code --okhttp-version} the mapping follows. */
    public static int mappingVersion() {
        return supportsAnyDepthPatterns() ? 4 : 3;
    }

    /**
     * The pinner entries for {@code policy} on day {@code today} (days since the epoch, UTC): the
     * enforced rules in force (an expired rule pins nothing unless the policy enforces expired
     * rules, as Android's Network Security Config), their {@code sha256/} pins.
     */
    public static List<Entry> entries(Policy policy, long today, int okhttpVersion) {
        List<Entry> out = new ArrayList<Entry>();
        for (PinRule rule : policy.rules()) {
            if (rule.report || (!policy.enforcesExpiredRules() && rule.expired(today))) {
                continue;
            }
            List<String> pins = new ArrayList<String>();
            for (Pin pin : rule.pins) {
                if (!pin.isCertificatePin()) {
                    pins.add(pin.toString());
                }
            }
            if (pins.isEmpty()) {
                continue;
            }
            Set<String> patterns = new LinkedHashSet<String>();
            for (HostPattern host : rule.hosts) {
                HostPattern.Kind kind = rule.includeSubdomains && host.kind == HostPattern.Kind.EXACT
                        ? HostPattern.Kind.ANY_DEPTH : host.kind;
                if (kind == HostPattern.Kind.EXACT) {
                    // OkHttp 3 parses a pattern as the host of "http://" + pattern: IPv6 needs brackets.
                    patterns.add(okhttpVersion == 3 && host.base.indexOf(':') >= 0 ? "[" + host.base + "]" : host.base);
                } else if (kind == HostPattern.Kind.ONE_LABEL) {
                    patterns.add("*." + host.base);
                } else if (okhttpVersion >= 4) {
                    patterns.add("**." + host.base);
                } else {
                    // Deeper names are left to PinningInterceptor.
                    patterns.add(host.base);
                    patterns.add("*." + host.base);
                }
            }
            for (String pattern : patterns) {
                out.add(new Entry(pattern, pins));
            }
        }
        return out;
    }

    /**
     * A {@code CertificatePinner} for {@code policy} on day {@code today}, for this OkHttp, to use
     * <em>alone</em>. Refused when the policy needs more than a pinner can do.
     *
     * @throws IllegalStateException a rule has deny pins, only whole-certificate pins, or (on
     *     OkHttp 3) a {@code **.} pattern: the pinner would accept what the policy refuses. Use
     *     {@link PinningInterceptor#install} instead, which adds the interceptor that enforces them.
     */
    public static CertificatePinner certificatePinner(Policy policy, long today) {
        int index = 0;
        for (PinRule rule : policy.rules()) {
            index++;
            if (rule.report || (!policy.enforcesExpiredRules() && rule.expired(today))) {
                continue;
            }
            String gap = null;
            if (!rule.deny.isEmpty()) {
                gap = "has deny pins, which OkHttp's CertificatePinner cannot express";
            } else if (entriesOf(rule, policy, today).isEmpty()) {
                gap = "has only whole-certificate pins, which OkHttp's CertificatePinner cannot express";
            } else if (mappingVersion() == 3 && anyDepth(rule)) {
                gap = "has a '**.' pattern, which OkHttp 3 cannot express (names two labels deep would "
                        + "be unpinned)";
            }
            if (gap != null) {
                throw new IllegalStateException("rule #" + index + " (" + rule.hosts.get(0) + ") " + gap
                        + "; use PinningInterceptor.install(), which adds the interceptor that enforces it");
            }
        }
        return partialCertificatePinner(policy, today);
    }

    private static List<Entry> entriesOf(PinRule rule, Policy policy, long today) {
        return entries(new Policy(Collections.singletonList(rule), policy.enforcesExpiredRules()), today, 4);
    }

    private static boolean anyDepth(PinRule rule) {
        for (HostPattern host : rule.hosts) {
            if (host.kind == HostPattern.Kind.ANY_DEPTH || (rule.includeSubdomains && host.kind == HostPattern.Kind.EXACT)) {
                return true;
            }
        }
        return false;
    }

    /**
     * The pinner entries OkHttp can express, to use together with {@link PinningInterceptor}
     * (which enforces the rest: deny pins, certificate pins, deep names on OkHttp 3).
     */
    public static CertificatePinner partialCertificatePinner(Policy policy, long today) {
        CertificatePinner.Builder builder = new CertificatePinner.Builder();
        for (Entry entry : entries(policy, today, mappingVersion())) {
            builder.add(entry.pattern, entry.pins.toArray(new String[0]));
        }
        return builder.build();
    }

    /** Days since the epoch (UTC) of a time in milliseconds. */
    public static long day(long epochMillis) {
        long seconds = epochMillis / 1000;
        return seconds >= 0 ? seconds / Codec.SECONDS_PER_DAY : -((-seconds + Codec.SECONDS_PER_DAY - 1) / Codec.SECONDS_PER_DAY);
    }
}
