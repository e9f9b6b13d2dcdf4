package io.tlspin.bundles;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Strict JSON for bundles (docs/bundle-format.md §3): UTF-8 only, no duplicate member names,
 * integers within ±(2^53−1) only, at most 64 levels of nesting, no lone surrogates.
 *
 * <p>Values: {@code Map<String, Object>} (member order kept), {@code List<Object>},
 * {@code String}, {@code Long}, {@code Boolean} and {@link #NULL}. Errors are reported in the
 * order of §3.5, so this parser names the same reason as every other conforming verifier: the
 * first syntax, number or duplicate error in the text (a duplicate counts at its object's closing
 * brace), lone surrogates only once the whole text parsed.
 */
final class Json {
    /** JSON {@code null} (a real object, so that a present null differs from an absent member). */
    static final Object NULL = new Object() {
        @Override
        public String toString() {
            return "null";
        }
    };

    static final int MAX_DEPTH = 64;
    static final long MAX_INT = 9007199254740991L;

    private final String text;
    private int pos;
    private boolean loneSurrogate;

    private Json(String text) {
        this.text = text;
    }

    /** Parse {@code data} strictly; documents over {@code maxBytes} are refused unread. */
    static Object parse(byte[] data, long maxBytes) throws BundleException {
        if (data.length > maxBytes) {
            throw new BundleException(BundleException.SIZE,
                    "the document is " + data.length + " bytes; at most " + maxBytes + " are accepted");
        }
        String text = decodeUtf8(data);
        if (text.startsWith("\uFEFF")) {
            throw new BundleException(BundleException.ENCODING,
                    "the document starts with a byte-order mark; expected plain UTF-8");
        }
        checkDepth(text);
        Json parser = new Json(text);
        parser.skipWhitespace();
        Object value = parser.value();
        parser.skipWhitespace();
        if (parser.pos != text.length()) {
            throw parser.syntax("extra data after the JSON value");
        }
        if (parser.loneSurrogate) {
            throw new BundleException(BundleException.ENCODING,
                    "a string holds an escaped lone surrogate such as \\ud800 (not valid Unicode)");
        }
        return value;
    }

    /** Decode UTF-8, refusing every malformed sequence (overlong forms, encoded surrogates). */
    static String decodeUtf8(byte[] data) throws BundleException {
        CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        try {
            CharBuffer chars = decoder.decode(ByteBuffer.wrap(data));
            return chars.toString();
        } catch (CharacterCodingException e) {
            throw new BundleException(BundleException.ENCODING, "the document is not UTF-8 text");
        }
    }

    /**
     * The nesting scan of §3.2: outside strings, [ and { open a level and ] and } close one
     * (never below zero); more than 64 open at once is refused before anything is parsed.
     */
    static void checkDepth(String text) throws BundleException {
        int depth = 0;
        int n = text.length();
        for (int i = 0; i < n; i++) {
            char c = text.charAt(i);
            if (c == '"') {
                i++;
                while (i < n && text.charAt(i) != '"') {
                    i += text.charAt(i) == '\\' ? 2 : 1;
                }
            } else if (c == '[' || c == '{') {
                if (++depth > MAX_DEPTH) {
                    throw new BundleException(BundleException.JSON,
                            "the JSON document nests arrays and objects more than " + MAX_DEPTH + " deep");
                }
            } else if ((c == ']' || c == '}') && depth > 0) {
                depth--;
            }
        }
    }

    private BundleException syntax(String what) {
        return new BundleException(BundleException.JSON,
                "invalid JSON at character " + pos + ": " + what);
    }

    private void skipWhitespace() {
        while (pos < text.length()) {
            char c = text.charAt(pos);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return;
            }
            pos++;
        }
    }

    private Object value() throws BundleException {
        if (pos >= text.length()) {
            throw syntax("expected a value");
        }
        char c = text.charAt(pos);
        switch (c) {
            case '{':
                return object();
            case '[':
                return array();
            case '"':
                return string();
            case 't':
                return literal("true", Boolean.TRUE);
            case 'f':
                return literal("false", Boolean.FALSE);
            case 'n':
                return literal("null", NULL);
            default:
                if (c == '-' || (c >= '0' && c <= '9')) {
                    return number();
                }
                throw syntax("expected a value");
        }
    }

    private Object literal(String word, Object value) throws BundleException {
        if (!text.startsWith(word, pos)) {
            throw syntax("expected a value");
        }
        pos += word.length();
        return value;
    }

    private Map<String, Object> object() throws BundleException {
        pos++;
        List<String> names = new ArrayList<String>();
        List<Object> values = new ArrayList<Object>();
        skipWhitespace();
        if (pos < text.length() && text.charAt(pos) == '}') {
            pos++;
            return new LinkedHashMap<String, Object>();
        }
        while (true) {
            if (pos >= text.length() || text.charAt(pos) != '"') {
                throw syntax("expected a member name in double quotes");
            }
            names.add(string());
            skipWhitespace();
            if (pos >= text.length() || text.charAt(pos) != ':') {
                throw syntax("expected ':'");
            }
            pos++;
            skipWhitespace();
            values.add(value());
            skipWhitespace();
            if (pos < text.length() && text.charAt(pos) == ',') {
                pos++;
                skipWhitespace();
                continue;
            }
            if (pos < text.length() && text.charAt(pos) == '}') {
                pos++;
                break;
            }
            throw syntax("expected ',' or '}'");
        }
        // Checked at the closing brace, after every member's value, as §3.5 orders it.
        Set<String> seen = new HashSet<String>();
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        for (int i = 0; i < names.size(); i++) {
            String name = names.get(i);
            if (!seen.add(name)) {
                throw new BundleException(BundleException.DUPLICATE_KEY,
                        "duplicate JSON member " + Codec.shown(name) + ": two parsers could read it differently");
            }
            out.put(name, values.get(i));
        }
        return out;
    }

    private List<Object> array() throws BundleException {
        pos++;
        List<Object> out = new ArrayList<Object>();
        skipWhitespace();
        if (pos < text.length() && text.charAt(pos) == ']') {
            pos++;
            return out;
        }
        while (true) {
            out.add(value());
            skipWhitespace();
            if (pos < text.length() && text.charAt(pos) == ',') {
                pos++;
                skipWhitespace();
                continue;
            }
            if (pos < text.length() && text.charAt(pos) == ']') {
                pos++;
                return out;
            }
            throw syntax("expected ',' or ']'");
        }
    }

    private String string() throws BundleException {
        int start = pos;
        pos++;
        StringBuilder out = new StringBuilder();
        while (true) {
            if (pos >= text.length()) {
                pos = start;
                throw syntax("unterminated string");
            }
            char c = text.charAt(pos++);
            if (c == '"') {
                break;
            }
            if (c < 0x20) {
                pos--;
                throw syntax("a control character must be escaped in a string");
            }
            if (c != '\\') {
                out.append(c);
                continue;
            }
            if (pos >= text.length()) {
                throw syntax("unterminated string");
            }
            char e = text.charAt(pos++);
            switch (e) {
                case '"':
                case '\\':
                case '/':
                    out.append(e);
                    break;
                case 'b':
                    out.append('\b');
                    break;
                case 'f':
                    out.append('\f');
                    break;
                case 'n':
                    out.append('\n');
                    break;
                case 'r':
                    out.append('\r');
                    break;
                case 't':
                    out.append('\t');
                    break;
                case 'u':
                    out.append(hex4());
                    break;
                default:
                    pos--;
                    throw syntax("invalid escape \\" + e);
            }
        }
        String value = out.toString();
        if (!loneSurrogate && hasLoneSurrogate(value)) {
            loneSurrogate = true;
        }
        return value;
    }

    private char hex4() throws BundleException {
        if (pos + 4 > text.length()) {
            throw syntax("invalid \\u escape");
        }
        int v = 0;
        for (int i = 0; i < 4; i++) {
            int d = Character.digit(text.charAt(pos + i), 16);
            char c = text.charAt(pos + i);
            boolean ascii = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
            if (d < 0 || !ascii) {
                throw syntax("invalid \\u escape");
            }
            v = v * 16 + d;
        }
        pos += 4;
        return (char) v;
    }

    /** True when the string holds a surrogate that is not half of a well-formed pair. */
    static boolean hasLoneSurrogate(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c)) {
                if (i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                    i++;
                    continue;
                }
                return true;
            }
            if (Character.isLowSurrogate(c)) {
                return true;
            }
        }
        return false;
    }

    private Object number() throws BundleException {
        int start = pos;
        if (text.charAt(pos) == '-') {
            pos++;
        }
        if (pos >= text.length()) {
            throw syntax("expected a value");
        }
        char c = text.charAt(pos);
        if (c == '0') {
            pos++;
        } else if (c >= '1' && c <= '9') {
            while (pos < text.length() && isDigit(text.charAt(pos))) {
                pos++;
            }
        } else {
            throw syntax("expected a value");
        }
        int intEnd = pos;
        boolean fraction = false;
        if (pos + 1 < text.length() && text.charAt(pos) == '.' && isDigit(text.charAt(pos + 1))) {
            fraction = true;
            pos += 2;
            while (pos < text.length() && isDigit(text.charAt(pos))) {
                pos++;
            }
        }
        if (pos < text.length() && (text.charAt(pos) == 'e' || text.charAt(pos) == 'E')) {
            int e = pos + 1;
            if (e < text.length() && (text.charAt(e) == '+' || text.charAt(e) == '-')) {
                e++;
            }
            if (e < text.length() && isDigit(text.charAt(e))) {
                fraction = true;
                pos = e;
                while (pos < text.length() && isDigit(text.charAt(pos))) {
                    pos++;
                }
            }
        }
        String token = text.substring(start, pos);
        if (fraction) {
            throw new BundleException(BundleException.NUMBER,
                    "expected only integers in a bundle, found the number " + Codec.cut(token, 40));
        }
        String digits = text.substring(text.charAt(start) == '-' ? start + 1 : start, intEnd);
        if (digits.length() > 16 || Math.abs(Long.parseLong(digits)) > MAX_INT) {
            throw new BundleException(BundleException.NUMBER,
                    "integer " + Codec.cut(token, 40) + " is out of range (|n| <= 2^53-1)");
        }
        long value = Long.parseLong(digits);
        return Long.valueOf(text.charAt(start) == '-' ? -value : value);
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }
}
