package io.tlspin.bundles;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * The updater's stored state without a network: the anti-rollback floor survives a damaged
 * bundle file, deny pins outlive their bundle, a tampered store is refused. (Fetching over
 * pinned TLS is tested end to end by tests/bundles/test_java_client.py.)
 */
public class UpdaterStateTest {
    private static final long DAY = 86400;
    private static final long T0 = 1735689600L; // 2025-01-01T00:00:00Z
    private static final String UPDATE = "{\"hosts\":[\"pins.example.com\"],\"pins\":[\"" + pin(1) + "\",\"" + pin(2) + "\"]}";
    private static final String FALLBACK = "{\"rule\":[" + UPDATE + ",{\"hosts\":[\"api.example.com\"],\"pins\":[\""
            + pin(3) + "\",\"" + pin(4) + "\"]}]}";

    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    private long now = (T0 + 14 * DAY) * 1000;
    private final List<BundleEvent> events = new ArrayList<BundleEvent>();

    static String pin(int n) {
        return "sha256/" + Codec.base64(Codec.sha256(("tlspin test pin " + n).getBytes()));
    }

    private static String policy(String apiRule) {
        return "{\"rule\":[" + UPDATE + "," + apiRule + "]}";
    }

    private static byte[] bundle(long version, String apiRule) {
        return Signing.document(version, policy(apiRule), T0, T0 + 31 * DAY, Signing.A);
    }

    private static String api(int a, int b) {
        return "{\"hosts\":[\"api.example.com\"],\"pins\":[\"" + pin(a) + "\",\"" + pin(b) + "\"]}";
    }

    private BundleUpdater updater(File dir) {
        return BundleUpdater.builder("https://pins.example.com/bundle.json")
                .trustedKeys(Arrays.asList(Signing.pub(Signing.A)), 1)
                .storeDirectory(dir)
                .fallbackPolicy(Policy.fromJson(FALLBACK))
                .clock(new Clock() {
                    @Override
                    public long millis() {
                        return now;
                    }
                })
                .observer(new BundleEvent.Observer() {
                    @Override
                    public void onEvent(BundleEvent event) {
                        events.add(event);
                    }
                })
                .build();
    }

    private static void damage(File file) throws IOException {
        FileOutputStream out = new FileOutputStream(file);
        out.write("{\"format\": \"tlspin-st".getBytes());
        out.close();
    }

    private boolean sawEvent(String kind) {
        for (BundleEvent e : events) {
            if (e.kind.equals(kind)) {
                return true;
            }
        }
        return false;
    }

    @Test
    public void acceptedBundleIsStoredAndReloaded() throws Exception {
        File dir = tmp.newFolder();
        BundleUpdater first = updater(dir);
        assertNull(first.version());
        RefreshResult result = first.receive(bundle(5, api(5, 6)), "\"e5\"");
        assertEquals("updated", result.outcome);
        BundleUpdater again = updater(dir);
        assertEquals(Long.valueOf(5), again.version());
        assertEquals(pin(5), again.currentPolicy().rulesFor("api.example.com").get(0).pins().get(0).toString());
        assertEquals("unchanged", again.receive(bundle(5, api(5, 6)), null).outcome);
        assertFalse(new File(dir, ".bundle.json.tmp").exists());
        for (String name : dir.list()) {
            assertFalse(name, name.endsWith(".tmp"));
        }
    }

    @Test
    public void floorSurvivesDamagedBundleFile() throws Exception {
        File dir = tmp.newFolder();
        BundleUpdater first = updater(dir);
        first.receive(bundle(5, api(5, 6)), null);
        damage(new File(dir, StoreFiles.CURRENT));
        BundleUpdater again = updater(dir);
        assertEquals(Long.valueOf(5), again.version());
        assertTrue(sawEvent("store-fallback"));
        // Another bundle of version 5 (validly signed) is equivocation, an older one a rollback.
        assertEquals("equivocation", again.receive(bundle(5, api(7, 8)), null).reason);
        assertEquals("rollback", again.receive(bundle(4, api(7, 8)), null).reason);
        assertEquals(pin(5), again.currentPolicy().rulesFor("api.example.com").get(0).pins().get(0).toString());
        // The twin: a newer bundle is taken.
        assertEquals("updated", again.receive(bundle(6, api(7, 8)), null).outcome);
    }

    @Test
    public void floorSurvivesDamagedStateFile() throws Exception {
        File dir = tmp.newFolder();
        updater(dir).receive(bundle(5, api(5, 6)), null);
        damage(new File(dir, StoreFiles.STATE));
        BundleUpdater again = updater(dir);
        assertEquals(Long.valueOf(5), again.version());
        assertEquals("equivocation", again.receive(bundle(5, api(7, 8)), null).reason);
    }

    @Test
    public void olderBundleFileLosesToStateFile() throws Exception {
        File dir = tmp.newFolder();
        BundleUpdater first = updater(dir);
        first.receive(bundle(5, api(5, 6)), null);
        byte[] five = Files.readAllBytes(new File(dir, StoreFiles.CURRENT).toPath());
        first.receive(bundle(6, api(7, 8)), null);
        // An attacker with file access puts the older (validly signed) bundle file back.
        Files.write(new File(dir, StoreFiles.CURRENT).toPath(), five);
        BundleUpdater again = updater(dir);
        assertEquals(Long.valueOf(6), again.version());
        assertEquals("rollback", again.receive(bundle(5, api(5, 6)), null).reason);
    }

    @Test
    public void bothNewestFilesDamagedFallsBackToPrevious() throws Exception {
        File dir = tmp.newFolder();
        BundleUpdater first = updater(dir);
        first.receive(bundle(5, api(5, 6)), null);
        first.receive(bundle(6, api(7, 8)), null);
        damage(new File(dir, StoreFiles.CURRENT));
        damage(new File(dir, StoreFiles.STATE));
        assertEquals(Long.valueOf(5), updater(dir).version());
    }

    @Test
    public void tamperedStoreIsRefusedForTheEmbeddedPolicy() throws Exception {
        File dir = tmp.newFolder();
        updater(dir).receive(bundle(5, api(5, 6)), null);
        for (String name : new String[] {StoreFiles.CURRENT, StoreFiles.STATE}) {
            File f = new File(dir, name);
            String text = new String(Files.readAllBytes(f.toPath()), "UTF-8");
            Files.write(f.toPath(), text.replace(pin(5), pin(9)).getBytes("UTF-8"));
        }
        BundleUpdater again = updater(dir);
        assertNull(again.version());
        assertEquals(pin(3), again.currentPolicy().rulesFor("api.example.com").get(0).pins().get(0).toString());
        // bundle.json fails its signature; state.json already its recorded digest.
        StringBuilder refused = new StringBuilder();
        for (BundleEvent e : events) {
            if (e.kind.equals("store-fallback")) {
                refused.append(e.message.contains("'threshold'") ? "threshold " : e.message.contains("'store'") ? "store " : "? ");
            }
        }
        assertEquals("threshold store ", refused.toString());
    }

    @Test
    public void denyPinsOutliveTheirBundle() throws Exception {
        File dir = tmp.newFolder();
        BundleUpdater first = updater(dir);
        String revoking = "{\"hosts\":[\"api.example.com\"],\"pins\":[\"" + pin(4) + "\",\"" + pin(5)
                + "\"],\"deny\":[\"" + pin(3) + "\"]}";
        assertEquals("updated", first.receive(bundle(5, revoking), null).outcome);
        now = (T0 + 40 * DAY) * 1000;
        Policy after = first.currentPolicy();
        assertNull(first.version());
        assertTrue(sawEvent("expired"));
        List<Pin> denied = new ArrayList<Pin>();
        for (PinRule rule : after.rulesFor("api.example.com")) {
            denied.addAll(rule.deny());
        }
        assertEquals(Arrays.asList(Pin.parseCanonical(pin(3))), denied);
        // Across a restart too: derived from the stored (expired) bundle.
        List<Pin> again = new ArrayList<Pin>();
        for (PinRule rule : updater(dir).currentPolicy().rulesFor("api.example.com")) {
            again.addAll(rule.deny());
        }
        assertEquals(denied, again);
        // The twin: a bundle without denies leaves the fallback as it is.
        File other = tmp.newFolder();
        now = (T0 + 14 * DAY) * 1000;
        BundleUpdater plain = updater(other);
        plain.receive(bundle(5, api(4, 5)), null);
        now = (T0 + 40 * DAY) * 1000;
        assertEquals(1, plain.currentPolicy().rulesFor("api.example.com").size());
    }

    @Test
    public void refusalsLeaveThePinsInForce() throws Exception {
        File dir = tmp.newFolder();
        BundleUpdater u = updater(dir);
        u.receive(bundle(5, api(5, 6)), null);
        assertEquals("threshold",
                u.receive(Signing.document(6, policy(api(7, 8)), T0, T0 + 31 * DAY, Signing.X), null).reason);
        assertEquals("expired",
                u.receive(Signing.document(6, policy(api(7, 8)), T0, T0 + 2 * DAY, Signing.A), null).reason);
        assertEquals("unpinned-update-host",
                u.receive(Signing.document(6, "{\"rule\":[" + api(7, 8) + "]}", T0, T0 + 31 * DAY, Signing.A), null).reason);
        assertEquals(Long.valueOf(5), u.version());
        assertNotNull(u.acceptedVersion());
        assertEquals(pin(5), u.currentPolicy().rulesFor("api.example.com").get(0).pins().get(0).toString());
    }

    @Test(expected = IllegalArgumentException.class)
    public void fallbackMustPinTheUpdateHost() {
        BundleUpdater.builder("https://pins.example.com/b.json")
                .trustedKeys(Arrays.asList(Signing.pub(Signing.A)), 1)
                .storeDirectory(tmp.getRoot())
                .fallbackPolicy(Policy.fromJson("{\"rule\":[" + api(3, 4) + "]}"))
                .build();
    }

    @Test(expected = IllegalArgumentException.class)
    public void bundleUrlMustBeHttps() {
        BundleUpdater.builder("http://pins.example.com/b.json")
                .trustedKeys(Arrays.asList(Signing.pub(Signing.A)), 1)
                .storeDirectory(tmp.getRoot())
                .fallbackPolicy(Policy.fromJson(FALLBACK))
                .build();
    }
}
