package io.tlspin.bundles;

import java.lang.reflect.Method;

/**
 * Is a domain a public suffix (Public Suffix List, private section included)? Asks the copy of
 * the list that OkHttp ships (okhttp3.internal.publicsuffix, in OkHttp 3 and 4), so that apps
 * carry no second copy. A wildcard over a public suffix ({@code *.co.uk}) is refused in bundles.
 */
final class PublicSuffix {
    private static volatile Method lookup;
    private static volatile Object database;

    private PublicSuffix() {
    }

    static boolean isPublicSuffix(String domain) {
        try {
            if (lookup == null) {
                Class<?> type = Class.forName("okhttp3.internal.publicsuffix.PublicSuffixDatabase");
                Object db;
                try {
                    db = type.getMethod("get").invoke(null);
                } catch (NoSuchMethodException | NullPointerException e) {
                    // OkHttp 4 without @JvmStatic: the Kotlin companion object has get().
                    Object companion = type.getField("Companion").get(null);
                    db = companion.getClass().getMethod("get").invoke(companion);
                }
                database = db;
                lookup = type.getMethod("getEffectiveTldPlusOne", String.class);
            }
            // null: the domain is a public suffix itself (or has no registrable part).
            return lookup.invoke(database, domain) == null;
        } catch (ReflectiveOperationException | RuntimeException e) {
            throw new IllegalStateException("OkHttp's public suffix list (okhttp3.internal.publicsuffix."
                    + "PublicSuffixDatabase) is not usable: " + e, e);
        }
    }
}
