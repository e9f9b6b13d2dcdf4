package io.tlspin.bundles;

/**
 * A bundle, key or store file was refused. {@link #reason()} names the rule that refused it, with
 * the same strings as tlspin's Python verifier (docs/bundle-format.md §8): {@code size},
 * {@code encoding}, {@code json}, {@code duplicate-key}, {@code number}, {@code schema},
 * {@code format}, {@code chain}, {@code policy}, {@code threshold}, {@code rotation},
 * {@code rollback}, {@code equivocation}, {@code expired}, {@code future},
 * {@code unpinned-update-host}, {@code key}, {@code store}.
 */
public final class BundleException extends Exception {
    private static final long serialVersionUID = 1L;

    public static final String SIZE = "size";
    public static final String ENCODING = "encoding";
    public static final String JSON = "json";
    public static final String DUPLICATE_KEY = "duplicate-key";
    public static final String NUMBER = "number";
    public static final String SCHEMA = "schema";
    public static final String FORMAT = "format";
    public static final String CHAIN = "chain";
    public static final String POLICY = "policy";
    public static final String THRESHOLD = "threshold";
    public static final String ROTATION = "rotation";
    public static final String ROLLBACK = "rollback";
    public static final String EQUIVOCATION = "equivocation";
    public static final String EXPIRED = "expired";
    public static final String FUTURE = "future";
    public static final String UNPINNED_UPDATE_HOST = "unpinned-update-host";
    public static final String KEY = "key";
    public static final String STORE = "store";

    private final String reason;
    private final String detail;

    /** A refusal by the rule {@code reason}; {@code detail} says what was expected and found. */
    public BundleException(String reason, String detail) {
        super("refused by rule '" + reason + "': " + detail);
        this.reason = reason;
        this.detail = detail;
    }

    /** The rule that refused: one of the constants of this class. */
    public String reason() {
        return reason;
    }

    /** The message without the rule name. */
    public String detail() {
        return detail;
    }
}
