package io.tlspin.bundles;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * RFC 8785 (JCS) for the values {@link Json} produces (docs/bundle-format.md §4): no whitespace,
 * members sorted by UTF-16 code units ({@link String#compareTo} compares exactly those), integers
 * in plain decimal, strings escaped as ECMAScript's JSON.stringify does.
 */
public final class Canonical {
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private Canonical() {
    }

    /** The canonical UTF-8 bytes of a parsed value. */
    static byte[] bytes(Object value) {
        StringBuilder out = new StringBuilder();
        emit(value, out);
        return out.toString().getBytes(StandardCharsets.UTF_8);
    }

    /**
     * Parse {@code json} strictly and return its canonical form (for tools and conformance tests).
     *
     * @throws BundleException the text is not strict JSON (§3)
     */
    public static byte[] canonicalize(byte[] json) throws BundleException {
        return bytes(Json.parse(json, Long.MAX_VALUE));
    }

    @SuppressWarnings("unchecked")
    private static void emit(Object value, StringBuilder out) {
        if (value == Json.NULL) {
            out.append("null");
        } else if (value instanceof Boolean) {
            out.append(((Boolean) value).booleanValue() ? "true" : "false");
        } else if (value instanceof Long) {
            out.append(((Long) value).longValue());
        } else if (value instanceof String) {
            string((String) value, out);
        } else if (value instanceof List) {
            out.append('[');
            boolean first = true;
            for (Object item : (List<Object>) value) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                emit(item, out);
            }
            out.append(']');
        } else if (value instanceof Map) {
            Map<String, Object> map = (Map<String, Object>) value;
            List<String> names = new ArrayList<String>(map.keySet());
            Collections.sort(names);
            out.append('{');
            boolean first = true;
            for (String name : names) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                string(name, out);
                out.append(':');
                emit(map.get(name), out);
            }
            out.append('}');
        } else {
            throw new IllegalArgumentException("not a JSON value: " + value);
        }
    }

    static void string(String s, StringBuilder out) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"':
                    out.append("\\\"");
                    break;
                case '\\':
                    out.append("\\\\");
                    break;
                case '\b':
                    out.append("\\b");
                    break;
                case '\t':
                    out.append("\\t");
                    break;
                case '\n':
                    out.append("\\n");
                    break;
                case '\f':
                    out.append("\\f");
                    break;
                case '\r':
                    out.append("\\r");
                    break;
                default:
                    if (c < 0x20) {
                        out.append("\\u00").append(HEX[c >> 4]).append(HEX[c & 0xf]);
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }
}
