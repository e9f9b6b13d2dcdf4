package io.tlspin.bundles;

import java.io.File;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Runs the conformance vectors of tests/vectors/bundles exactly as their README says, with this
 * verifier. {@code main} prints one JSON line per vector ({@code {"name", "result"}}), which
 * tests/bundles/test_java_client.py compares with the Python verifier's answers.
 */
public final class VectorRunner {
    private VectorRunner() {
    }

    static File root() {
        String dir = System.getenv("TLSPIN_VECTORS");
        if (dir == null) {
            throw new IllegalStateException("set TLSPIN_VECTORS to tests/vectors/bundles");
        }
        return new File(dir);
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> manifest(File root) throws IOException, BundleException {
        byte[] data = Files.readAllBytes(new File(root, "vectors.json").toPath());
        return (Map<String, Object>) Json.parse(data, Long.MAX_VALUE);
    }

    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> list(Map<String, Object> manifest, String key) {
        return (List<Map<String, Object>>) manifest.get(key);
    }

    /** One vector's result, in the form of its {@code expect}. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> evaluate(Map<String, Object> vector, File root) throws Exception {
        String host = (String) vector.get("update_host");
        List<String> keys = (List<String>) vector.get("trusted_keys");
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        TrustState trust;
        try {
            trust = TrustState.of(KeySet.of(keys, ((Long) vector.get("threshold")).intValue()));
        } catch (BundleException e) {
            // Keys no client may trust (e.g. a point of small order): reason "key".
            out.put("verdict", "refused");
            out.put("reason", e.reason());
            return out;
        }
        Bundle current = null;
        if (vector.get("stored") != Json.NULL) {
            byte[] stored = read(root, (String) vector.get("stored"));
            Verified kept = Verifier.accept(Document.parse(stored, Document.DEFAULT_MAX_BYTES), trust, null, 0,
                    0, 0, false, host);
            trust = kept.trust();
            current = kept.bundle();
        }
        long now = Codec.time(vector.get("now"), "now");
        Verified verified;
        try {
            Document document = Document.parse(read(root, (String) vector.get("document")),
                    (Long) vector.get("max_bytes"));
            verified = Verifier.accept(document, trust, current, (Long) vector.get("min_version"), now,
                    (Long) vector.get("clock_skew"), true, host);
        } catch (BundleException e) {
            out.put("verdict", "refused");
            out.put("reason", e.reason());
            return out;
        }
        out.put("verdict", verified.unchanged() ? "unchanged" : "accepted");
        out.put("version", Long.valueOf(verified.bundle().version()));
        out.put("canonical_sha256", verified.bundle().canonicalSha256());
        out.put("signers", new ArrayList<Object>(verified.signers()));
        Map<String, Object> trustOut = new LinkedHashMap<String, Object>();
        List<Object> keyTexts = new ArrayList<Object>();
        for (BundleKey key : verified.trust().keys().keys()) {
            keyTexts.add(key.base64());
        }
        trustOut.put("keys", keyTexts);
        trustOut.put("threshold", Long.valueOf(verified.trust().keys().threshold()));
        trustOut.put("version", Long.valueOf(verified.trust().version()));
        out.put("trust", trustOut);
        out.put("policy", verified.policy().toValue());
        Map<String, Object> okhttp = new LinkedHashMap<String, Object>();
        long today = OkHttpPinning.day(now * 1000);
        for (int version : new int[] {3, 4}) {
            List<Object> entries = new ArrayList<Object>();
            for (OkHttpPinning.Entry entry : OkHttpPinning.entries(verified.policy(), today, version)) {
                List<Object> pair = new ArrayList<Object>();
                pair.add(entry.pattern);
                pair.add(new ArrayList<Object>(entry.pins));
                entries.add(pair);
            }
            okhttp.put(String.valueOf(version), entries);
        }
        out.put("okhttp", okhttp);
        return out;
    }

    /** A canonical case's result: {"canonical": text} or {"reason": reason}. */
    static Map<String, Object> canonical(Map<String, Object> item, File root) throws IOException {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        try {
            out.put("canonical", new String(Canonical.canonicalize(read(root, (String) item.get("input"))),
                    StandardCharsets.UTF_8));
        } catch (BundleException e) {
            out.put("reason", e.reason());
        }
        return out;
    }

    static byte[] read(File root, String path) throws IOException {
        return Files.readAllBytes(new File(root, path).toPath());
    }

    static String json(Object value) {
        return new String(Canonical.bytes(value), StandardCharsets.UTF_8);
    }

    /** Print every vector's and canonical case's result as JSON lines on stdout. */
    public static void main(String[] args) throws Exception {
        File root = args.length > 0 ? new File(args[0]) : root();
        Map<String, Object> manifest = manifest(root);
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        for (String section : new String[] {"vectors", "canonical"}) {
            for (Map<String, Object> item : list(manifest, section)) {
                Map<String, Object> line = new LinkedHashMap<String, Object>();
                line.put("section", section);
                line.put("name", item.get("name"));
                line.put("result", section.equals("vectors") ? evaluate(item, root) : canonical(item, root));
                out.println(json(line));
            }
        }
    }
}
