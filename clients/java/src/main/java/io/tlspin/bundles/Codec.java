package io.tlspin.bundles;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.bouncycastle.util.encoders.Base64;
import org.bouncycastle.util.encoders.Hex;

/**
 * Text forms of the format: strict base64 (§3.4), times (§3.3), dates (§9), hex, SHA-256.
 * Java 8 APIs that Android has at every level (no java.time, no java.util.Base64).
 */
final class Codec {
    private static final Pattern BASE64 = Pattern.compile(
            "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?");
    private static final Pattern TIME = Pattern.compile(
            "([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z");
    private static final Pattern DATE = Pattern.compile("([0-9]{4})-([0-9]{2})-([0-9]{2})");
    static final long SECONDS_PER_DAY = 86400L;

    private Codec() {
    }

    /** Standard padded base64 in canonical form, decoding to {@code length} bytes (or any, if -1). */
    static byte[] base64(Object value, String what, int length) throws BundleException {
        if (!(value instanceof String) || !BASE64.matcher((String) value).matches()) {
            throw new BundleException(BundleException.SCHEMA,
                    what + " must be standard padded base64, found " + shown(value));
        }
        String text = (String) value;
        byte[] raw = Base64.decode(text);
        if (!Base64.toBase64String(raw).equals(text)) {
            // Stray bits in the padding would give one value two spellings.
            throw new BundleException(BundleException.SCHEMA,
                    what + " is not in canonical base64 form: " + shown(value));
        }
        if (length >= 0 && raw.length != length) {
            throw new BundleException(BundleException.SCHEMA,
                    what + " must decode to " + length + " bytes, found " + raw.length);
        }
        return raw;
    }

    static String base64(byte[] raw) {
        return Base64.toBase64String(raw);
    }

    static String hex(byte[] raw) {
        return Hex.toHexString(raw);
    }

    static byte[] sha256(byte[] data) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(data);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this platform", e);
        }
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** {@code YYYY-MM-DDTHH:MM:SSZ} exactly, as seconds since the epoch. */
    static long time(Object value, String what) throws BundleException {
        Matcher m = value instanceof String ? TIME.matcher((String) value) : null;
        if (m == null || !m.matches()) {
            throw new BundleException(BundleException.SCHEMA,
                    what + " must be a UTC time like 2030-01-31T12:00:00Z, found " + shown(value));
        }
        long day = epochDay(Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)),
                Integer.parseInt(m.group(3)));
        int h = Integer.parseInt(m.group(4));
        int min = Integer.parseInt(m.group(5));
        int s = Integer.parseInt(m.group(6));
        if (day == Long.MIN_VALUE || h > 23 || min > 59 || s > 59) {
            throw new BundleException(BundleException.SCHEMA, what + " is not a real time: " + value);
        }
        return day * SECONDS_PER_DAY + h * 3600L + min * 60L + s;
    }

    /** {@code YYYY-MM-DD} (a real date of the years 1 to 9999) as days since the epoch, or null. */
    static Long date(String value) {
        Matcher m = DATE.matcher(value);
        if (!m.matches()) {
            return null;
        }
        long day = epochDay(Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)),
                Integer.parseInt(m.group(3)));
        return day == Long.MIN_VALUE ? null : Long.valueOf(day);
    }

    /** Days since 1970-01-01 of a proleptic Gregorian date; Long.MIN_VALUE if there is no such day. */
    static long epochDay(int year, int month, int day) {
        if (year < 1 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) {
            return Long.MIN_VALUE;
        }
        // Howard Hinnant's days_from_civil.
        long y = month <= 2 ? year - 1 : year;
        long era = (y >= 0 ? y : y - 399) / 400;
        long yoe = y - era * 400;
        long doy = (153L * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
        long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
    }

    private static int daysInMonth(int year, int month) {
        switch (month) {
            case 2:
                boolean leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
                return leap ? 29 : 28;
            case 4:
            case 6:
            case 9:
            case 11:
                return 30;
            default:
                return 31;
        }
    }

    /** Seconds since the epoch as {@code YYYY-MM-DDTHH:MM:SSZ}. */
    static String formatTime(long epochSeconds) {
        // Math.floorDiv needs Android API 24.
        long day = epochSeconds >= 0 ? epochSeconds / SECONDS_PER_DAY
                : -((-epochSeconds + SECONDS_PER_DAY - 1) / SECONDS_PER_DAY);
        long secs = epochSeconds - day * SECONDS_PER_DAY;
        return formatDate(day) + String.format("T%02d:%02d:%02dZ", secs / 3600, secs / 60 % 60, secs % 60);
    }

    /** Days since the epoch as {@code YYYY-MM-DD}. */
    static String formatDate(long epochDay) {
        // Howard Hinnant's civil_from_days.
        long z = epochDay + 719468;
        long era = (z >= 0 ? z : z - 146096) / 146097;
        long doe = z - era * 146097;
        long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        long mp = (5 * doy + 2) / 153;
        long d = doy - (153 * mp + 2) / 5 + 1;
        long m = mp < 10 ? mp + 3 : mp - 9;
        long y = yoe + era * 400 + (m <= 2 ? 1 : 0);
        return String.format("%04d-%02d-%02d", y, m, d);
    }

    /** A value for an error message: quoted, cut short, control characters escaped. */
    static String shown(Object value) {
        if (!(value instanceof String)) {
            return value == null ? "nothing" : value == Json.NULL ? "null" : kind(value);
        }
        StringBuilder out = new StringBuilder();
        Canonical.string(cut((String) value, 80), out);
        return out.toString();
    }

    static String cut(String s, int max) {
        return s.length() <= max ? s : s.substring(0, max) + "… (" + s.length() + " characters)";
    }

    /** "an object", "an array"… for messages. */
    static String kind(Object value) {
        if (value instanceof java.util.Map) {
            return "an object";
        }
        if (value instanceof java.util.List) {
            return "an array";
        }
        if (value instanceof String) {
            return "a string";
        }
        if (value instanceof Boolean) {
            return "a boolean";
        }
        if (value instanceof Long) {
            return "an integer";
        }
        return value == Json.NULL ? "null" : "nothing";
    }
}
