package io.tlspin.bundles;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What a {@link BundleUpdater} keeps in its {@link BundleStore}, in the same files and formats as
 * tlspin's Python {@code BundleStore}:
 *
 * <ul>
 *   <li>{@code bundle.json} — {@code {"format": "tlspin-store/1", "etag", "document"}}: the newest
 *       accepted bundle with its full rotation chain;
 *   <li>{@code state.json} — {@code {"format": "tlspin-state/1", "version", "digest", "document"}}:
 *       the same bundle again, written last, so that damaging one file lowers neither the
 *       anti-rollback floor nor its digest;
 *   <li>{@code bundle.previous.json} — the bundle before it (the last good one).
 * </ul>
 */
final class StoreFiles {
    static final String CURRENT = "bundle.json";
    static final String STATE = "state.json";
    static final String PREVIOUS = "bundle.previous.json";
    static final String STORE_FORMAT = "tlspin-store/1";
    static final String STATE_FORMAT = "tlspin-state/1";

    private final BundleStore store;
    private final long fileCap;

    StoreFiles(BundleStore store, long maxBytes) {
        this.store = store;
        // A store file holds the bundle and its rotation chain: up to MAX_CHAIN + 2 documents.
        this.fileCap = maxBytes * (Document.MAX_CHAIN + 2);
    }

    /** The stored bundle to use, its ETag, and the files refused on the way. */
    static final class Loaded {
        final Verified verified;
        final String etag;
        final List<String> problems;

        Loaded(Verified verified, String etag, List<String> problems) {
            this.verified = verified;
            this.etag = etag;
            this.problems = problems;
        }
    }

    /**
     * Re-verify the stored files from {@code root} (the app's keys; expiry not checked: an expired
     * bundle still counts against rollback). The newer of bundle.json and state.json that verifies
     * wins (state.json on a tie with other content); bundle.previous.json only if neither does.
     */
    Loaded load(TrustState root, long minVersion, String host) {
        List<String> problems = new ArrayList<String>();
        Map<String, Verified> found = new LinkedHashMap<String, Verified>();
        Map<String, String> etags = new LinkedHashMap<String, String>();
        for (String name : new String[] {CURRENT, STATE, PREVIOUS}) {
            if (name.equals(PREVIOUS) && !found.isEmpty()) {
                break;
            }
            try {
                byte[] data = store.read(name);
                if (data == null) {
                    if (name.equals(CURRENT) && (store.read(PREVIOUS) != null || store.read(STATE) != null)) {
                        problems.add("stored " + CURRENT + " is missing (rule: store)");
                    }
                    continue;
                }
                String[] etag = new String[1];
                Document document = parse(name, data, etag);
                found.put(name, Verifier.accept(document, root, null, minVersion, 0, 0, false, host));
                etags.put(name, etag[0]);
            } catch (IOException e) {
                problems.add("stored " + name + " cannot be read: " + e.getMessage() + " (rule: store)");
            } catch (BundleException e) {
                problems.add("stored " + name + " " + e.getMessage());
            } catch (RuntimeException e) {
                problems.add("stored " + name + " cannot be checked: " + e);
            }
        }
        Verified current = found.get(CURRENT);
        Verified state = found.get(STATE);
        if (current != null && state != null) {
            Bundle a = current.bundle();
            Bundle b = state.bundle();
            if (a.version() == b.version() && !a.sameContent(b)) {
                problems.add("stored " + CURRENT + " and " + STATE + " hold different bundles of version "
                        + a.version() + "; using " + STATE + " (rule: equivocation)");
                current = null;
            } else if (a.version() < b.version()) {
                problems.add("stored " + CURRENT + " holds version " + a.version() + ", older than version "
                        + b.version() + " in " + STATE + " (rule: rollback)");
                current = null;
            }
        }
        if (current != null) {
            return new Loaded(current, etags.get(CURRENT), problems);
        }
        if (state != null) {
            return new Loaded(state, null, problems);
        }
        return new Loaded(found.get(PREVIOUS), etags.get(PREVIOUS), problems);
    }

    @SuppressWarnings("unchecked")
    private Document parse(String name, byte[] data, String[] etag) throws BundleException {
        Object value = Json.parse(data, fileCap);
        if (name.equals(STATE)) {
            if (!(value instanceof Map) || !((Map<String, Object>) value).keySet().equals(
                    new HashSet<String>(Arrays.asList("format", "version", "digest", "document")))) {
                throw new BundleException(BundleException.SCHEMA, "is not a tlspin state file");
            }
            Map<String, Object> map = (Map<String, Object>) value;
            if (!STATE_FORMAT.equals(map.get("format"))) {
                throw new BundleException(BundleException.FORMAT, "has state format " + Codec.shown(map.get("format")));
            }
            Document document = Document.fromValue(map.get("document"));
            Bundle bundle = document.bundle();
            if (!Long.valueOf(bundle.version()).equals(map.get("version"))
                    || !bundle.canonicalSha256().equals(map.get("digest"))) {
                throw new BundleException(BundleException.STORE, "records a version and digest other than its bundle's");
            }
            return document;
        }
        if (!(value instanceof Map) || !((Map<String, Object>) value).keySet().equals(
                new HashSet<String>(Arrays.asList("format", "etag", "document")))) {
            throw new BundleException(BundleException.SCHEMA, "is not a tlspin store file");
        }
        Map<String, Object> map = (Map<String, Object>) value;
        if (!STORE_FORMAT.equals(map.get("format"))) {
            throw new BundleException(BundleException.FORMAT, "has store format " + Codec.shown(map.get("format")));
        }
        Object tag = map.get("etag");
        if (tag != Json.NULL && !(tag instanceof String)) {
            throw new BundleException(BundleException.SCHEMA, "etag must be a string or null");
        }
        etag[0] = tag == Json.NULL ? null : (String) tag;
        return Document.fromValue(map.get("document"));
    }

    /** Store {@code document} as the newest, {@code previous} as the last good; previous first, state last. */
    void save(Document document, Document previous, String etag) throws IOException {
        if (previous != null) {
            store.write(PREVIOUS, storeFile(previous, null));
        }
        store.write(CURRENT, storeFile(document, etag));
        Map<String, Object> state = new LinkedHashMap<String, Object>();
        state.put("format", STATE_FORMAT);
        state.put("version", Long.valueOf(document.bundle().version()));
        state.put("digest", document.bundle().canonicalSha256());
        state.put("document", document.toValue());
        store.write(STATE, Canonical.bytes(state));
    }

    private static byte[] storeFile(Document document, String etag) {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("format", STORE_FORMAT);
        out.put("etag", etag == null ? Json.NULL : etag);
        out.put("document", document.toValue());
        return Canonical.bytes(out);
    }
}
