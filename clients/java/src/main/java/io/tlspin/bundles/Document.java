package io.tlspin.bundles;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A bundle as served or stored: the bundle and the key-rotation bundles before it (its
 * {@code chain}, oldest first). Parsing checks the format only; {@link Verifier} verifies.
 */
public final class Document {
    /** The size cap of a served document, as tlspin's default: 4 MiB. */
    public static final int DEFAULT_MAX_BYTES = 4 * 1024 * 1024;
    static final int MAX_CHAIN = 32;

    private final Bundle bundle;
    private final List<Bundle> chain;

    Document(Bundle bundle, List<Bundle> chain) {
        this.bundle = bundle;
        this.chain = Collections.unmodifiableList(new ArrayList<Bundle>(chain));
    }

    /** The bundle. */
    public Bundle bundle() {
        return bundle;
    }

    /** The rotation bundles before it, oldest first. */
    public List<Bundle> chain() {
        return chain;
    }

    /**
     * Parse a served document (§2, §3), refusing it unread when over {@code maxBytes}.
     *
     * @throws BundleException the first rule of §3.5 the document breaks
     */
    public static Document parse(byte[] data, long maxBytes) throws BundleException {
        return fromValue(Json.parse(data, maxBytes));
    }

    @SuppressWarnings("unchecked")
    static Document fromValue(Object value) throws BundleException {
        Map<String, Object> document = Bundle.object(value, "the document",
                new String[] {"signed", "signatures", "chain"}, new String[] {"signed", "signatures"});
        Object chainData = document.containsKey("chain") ? document.get("chain") : new ArrayList<Object>();
        if (!(chainData instanceof List) || ((List<Object>) chainData).size() > MAX_CHAIN) {
            throw new BundleException(BundleException.CHAIN, "chain must be an array of at most "
                    + MAX_CHAIN + " bundles, found " + Codec.kind(chainData));
        }
        List<Bundle> chain = new ArrayList<Bundle>();
        int index = 0;
        for (Object item : (List<Object>) chainData) {
            chain.add(Bundle.parse(item, "chain[" + index++ + "]"));
        }
        Map<String, Object> envelope = new LinkedHashMap<String, Object>();
        envelope.put("signed", document.get("signed"));
        envelope.put("signatures", document.get("signatures"));
        Bundle bundle = Bundle.parse(envelope, "the bundle");
        long previous = 0;
        index = 0;
        for (Bundle entry : chain) {
            if (entry.signingKeys() == null) {
                throw new BundleException(BundleException.CHAIN, "chain[" + index
                        + "] introduces no signing_keys; only key rotations belong in the chain");
            }
            if (entry.version() <= previous) {
                throw new BundleException(BundleException.CHAIN,
                        "chain versions must increase, found " + entry.version() + " after " + previous);
            }
            previous = entry.version();
            index++;
        }
        if (!chain.isEmpty() && bundle.version() <= previous) {
            throw new BundleException(BundleException.CHAIN, "the bundle (version " + bundle.version()
                    + ") must be newer than its chain (up to " + previous + ")");
        }
        return new Document(bundle, chain);
    }

    /** The document as JSON data ({@code chain} only when not empty). */
    Map<String, Object> toValue() {
        Map<String, Object> out = bundle.envelope();
        if (!chain.isEmpty()) {
            List<Object> entries = new ArrayList<Object>();
            for (Bundle entry : chain) {
                entries.add(entry.envelope());
            }
            out.put("chain", entries);
        }
        return out;
    }

    /** Compact JSON of the document (signatures cover the canonical form, not the layout). */
    public byte[] toBytes() {
        return Canonical.bytes(toValue());
    }
}
