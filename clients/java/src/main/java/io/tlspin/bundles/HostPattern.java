package io.tlspin.bundles;

import java.util.regex.Pattern;

/**
 * A host pattern in the canonical form of a bundle (§9), matched as OkHttp and tlspin match:
 * {@code api.example.com} that host only, {@code *.example.com} exactly one more label,
 * {@code **.example.com} the name and any depth below it.
 */
public final class HostPattern {
    /** How a pattern matches. */
    enum Kind { EXACT, ONE_LABEL, ANY_DEPTH }

    private static final Pattern LABEL = Pattern.compile("[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?");
    private static final Pattern NUMERIC = Pattern.compile("[0-9]+|0[xX][0-9a-fA-F]*");
    private static final Pattern OCTET = Pattern.compile("0|[1-9][0-9]{0,2}");

    final Kind kind;
    final String base;
    final boolean ip;

    HostPattern(Kind kind, String base, boolean ip) {
        this.kind = kind;
        this.base = base;
        this.ip = ip;
    }

    /** The pattern text, e.g. {@code **.example.com}. */
    @Override
    public String toString() {
        return (kind == Kind.EXACT ? "" : kind == Kind.ONE_LABEL ? "*." : "**.") + base;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof HostPattern && o.toString().equals(toString());
    }

    @Override
    public int hashCode() {
        return toString().hashCode();
    }

    /** Parse a canonical pattern; the problem as a sentence, or the pattern. */
    static HostPattern parse(String text, boolean includeSubdomains) throws PolicyProblem {
        Kind kind = Kind.EXACT;
        String rest = text;
        if (text.startsWith("**.")) {
            kind = Kind.ANY_DEPTH;
            rest = text.substring(3);
        } else if (text.startsWith("*.")) {
            kind = Kind.ONE_LABEL;
            rest = text.substring(2);
        }
        if (rest.indexOf('*') >= 0) {
            throw new PolicyProblem("host pattern " + Codec.shown(text) + ": a wildcard is allowed only as the "
                    + "whole leftmost label ('*.example.com' or '**.example.com')");
        }
        boolean ip;
        if (rest.indexOf(':') >= 0) {
            if (!canonicalIpv6(rest)) {
                throw new PolicyProblem("host pattern " + Codec.shown(text) + " is not an IPv6 address in "
                        + "canonical form (RFC 5952, lower case, no brackets, zone or IPv4 part)");
            }
            ip = true;
        } else {
            ip = canonicalIpv4(rest);
            if (!ip) {
                String problem = dnsProblem(rest);
                if (problem != null) {
                    throw new PolicyProblem("host pattern " + Codec.shown(text) + ": " + problem);
                }
            }
        }
        if (ip && (kind != Kind.EXACT || includeSubdomains)) {
            throw new PolicyProblem("host pattern " + Codec.shown(text)
                    + ": IP addresses take no wildcard or include_subdomains");
        }
        Kind effective = includeSubdomains && kind == Kind.EXACT ? Kind.ANY_DEPTH : kind;
        // Syntax only: a wildcard needs a base with a dot. Whether the base is a public suffix is
        // checked where policies are written (tlspin's policy files, `tlspin bundle sign`), never
        // here, so that no Public Suffix List version decides a verdict (§9).
        if (effective != Kind.EXACT && rest.indexOf('.') < 0) {
            throw new PolicyProblem("host pattern " + Codec.shown(text) + " covers every name under the "
                    + "top-level domain " + Codec.shown(rest) + "; a wildcard or include_subdomains needs a base "
                    + "with a dot");
        }
        return new HostPattern(kind, rest, ip);
    }

    /** Why {@code name} is not a canonical DNS name (A-labels), or null. */
    private static String dnsProblem(String name) {
        if (name.length() > 253) {
            return "the name is longer than 253 characters";
        }
        String[] labels = name.split("\\.", -1);
        if (NUMERIC.matcher(labels[labels.length - 1]).matches()) {
            return "the name ends in a number but is not an IPv4 address in canonical form";
        }
        for (String label : labels) {
            if (!LABEL.matcher(label).matches()) {
                return "invalid label " + Codec.shown(label) + ": expected 1 to 63 of a-z, 0-9, _ and "
                        + "inner hyphens (lower case, IDNs as xn-- A-labels, no trailing dot)";
            }
        }
        return null;
    }

    static boolean canonicalIpv4(String s) {
        String[] parts = s.split("\\.", -1);
        if (parts.length != 4) {
            return false;
        }
        for (String part : parts) {
            if (!OCTET.matcher(part).matches() || Integer.parseInt(part) > 255) {
                return false;
            }
        }
        return true;
    }

    /** True when {@code s} is an IPv6 address written exactly as RFC 5952 (and Python) write it. */
    static boolean canonicalIpv6(String s) {
        int[] all = s.indexOf('.') >= 0 ? null : ipv6Groups(s);
        if (all == null) {
            return false;
        }
        boolean mapped = all[0] == 0 && all[1] == 0 && all[2] == 0 && all[3] == 0 && all[4] == 0
                && all[5] == 0xffff;
        return !mapped && format(all).equals(s);
    }

    /**
     * The eight groups of an IPv6 address in any RFC 4291 text form (lower-case hex, {@code ::},
     * a trailing dotted IPv4 part), or null.
     */
    static int[] ipv6Groups(String s) {
        String text = s;
        int[] tail = new int[0];
        int lastColon = text.lastIndexOf(':');
        if (text.indexOf('.', lastColon) >= 0) {
            String v4 = text.substring(lastColon + 1);
            if (!canonicalIpv4(v4)) {
                return null;
            }
            String[] o = v4.split("\\.");
            tail = new int[] {Integer.parseInt(o[0]) << 8 | Integer.parseInt(o[1]),
                Integer.parseInt(o[2]) << 8 | Integer.parseInt(o[3])};
            text = text.substring(0, lastColon + 1) + "0:0";
        }
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == ':')) {
                return null;
            }
        }
        int gap = text.indexOf("::");
        if (gap >= 0 && text.indexOf("::", gap + 1) >= 0) {
            return null;
        }
        int[] left = groups(gap >= 0 ? text.substring(0, gap) : text);
        int[] right = groups(gap >= 0 ? text.substring(gap + 2) : "");
        if (left == null || right == null) {
            return null;
        }
        int[] all = new int[8];
        if (gap < 0) {
            if (left.length != 8) {
                return null;
            }
            all = left;
        } else {
            if (left.length + right.length > 7) {
                return null;
            }
            System.arraycopy(left, 0, all, 0, left.length);
            System.arraycopy(right, 0, all, 8 - right.length, right.length);
        }
        if (tail.length == 2) {
            all[6] = tail[0];
            all[7] = tail[1];
        }
        return all;
    }

    private static int[] groups(String part) {
        if (part.isEmpty()) {
            return new int[0];
        }
        String[] texts = part.split(":", -1);
        int[] out = new int[texts.length];
        for (int i = 0; i < texts.length; i++) {
            if (texts[i].isEmpty() || texts[i].length() > 4) {
                return null;
            }
            out[i] = Integer.parseInt(texts[i], 16);
        }
        return out;
    }

    /** The longest run of two or more zero groups (the first, if tied) becomes "::". */
    static String format(int[] groups) {
        int best = -1;
        int bestLength = 0;
        for (int i = 0; i < 8; ) {
            if (groups[i] != 0) {
                i++;
                continue;
            }
            int j = i;
            while (j < 8 && groups[j] == 0) {
                j++;
            }
            if (j - i > bestLength) {
                best = i;
                bestLength = j - i;
            }
            i = j;
        }
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < 8; i++) {
            if (bestLength > 1 && i == best) {
                out.append("::");
                i += bestLength - 1;
                continue;
            }
            if (out.length() > 0 && out.charAt(out.length() - 1) != ':') {
                out.append(':');
            }
            out.append(Integer.toHexString(groups[i]));
        }
        return out.toString();
    }

    /** True if the canonical {@code host} is covered (with include_subdomains: as {@code **.}). */
    boolean matches(String host, boolean includeSubdomains) {
        Kind k = includeSubdomains && kind == Kind.EXACT ? Kind.ANY_DEPTH : kind;
        if (k == Kind.EXACT) {
            return host.equals(base);
        }
        if (k == Kind.ANY_DEPTH) {
            return host.equals(base) || host.endsWith("." + base);
        }
        if (!host.endsWith("." + base)) {
            return false;
        }
        String head = host.substring(0, host.length() - base.length() - 1);
        return !head.isEmpty() && head.indexOf('.') < 0;
    }

    /** A policy rule that breaks §9, as a sentence (the caller adds the rule's place). */
    static final class PolicyProblem extends Exception {
        private static final long serialVersionUID = 1L;

        PolicyProblem(String message) {
            super(message);
        }
    }
}
