package io.tlspin.bundles;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.security.cert.Certificate;
import java.util.Collections;

import javax.net.ssl.SSLPeerUnverifiedException;

import okhttp3.CertificatePinner;

import org.junit.Test;

/** The CertificatePinner mapping on the OkHttp in use, and what it refuses to do alone. */
public class PinnerTest {
    private static final String P1 = UpdaterStateTest.pin(1);
    private static final String P2 = UpdaterStateTest.pin(2);

    private static boolean pinned(CertificatePinner pinner, String host) {
        try {
            pinner.check(host, Collections.<Certificate>emptyList());
            return false;
        } catch (SSLPeerUnverifiedException e) {
            return true;
        }
    }

    private static Policy policy(String rules) {
        return Policy.fromJson("{\"rule\":[" + rules + "]}");
    }

    @Test
    public void debianOkHttp3HasNoAnyDepthPatterns() {
        // Debian ships OkHttp 3.13: "**." reads as a literal host there, so the mapping expands it.
        assertFalse(OkHttpPinning.supportsAnyDepthPatterns());
        assertEquals(3, OkHttpPinning.mappingVersion());
    }

    @Test
    public void ipv6AndWildcardsBuildAndPinOnThisOkHttp() {
        Policy p = policy("{\"hosts\":[\"::1\",\"127.0.0.1\",\"*.example.com\"],\"pins\":[\"" + P1 + "\",\"" + P2 + "\"]}");
        CertificatePinner pinner = OkHttpPinning.certificatePinner(p, 0);
        assertTrue(pinned(pinner, "::1"));
        assertTrue(pinned(pinner, "127.0.0.1"));
        assertTrue(pinned(pinner, "a.example.com"));
        assertFalse(pinned(pinner, "example.com"));
    }

    @Test
    public void pinnerAloneRefusesWhatOnlyTheInterceptorEnforces() {
        String[] gaps = {
            "{\"hosts\":[\"a.example.com\"],\"pins\":[\"" + P1 + "\"],\"deny\":[\"" + P2 + "\"]}",
            "{\"hosts\":[\"a.example.com\"],\"pins\":[\"cert-sha256/" + repeat("ab", 32) + "\"]}",
            "{\"hosts\":[\"**.example.com\"],\"pins\":[\"" + P1 + "\"]}",
            "{\"hosts\":[\"example.com\"],\"include_subdomains\":true,\"pins\":[\"" + P1 + "\"]}",
        };
        for (String rule : gaps) {
            try {
                OkHttpPinning.certificatePinner(policy(rule), 0);
                fail("accepted " + rule);
            } catch (IllegalStateException e) {
                assertTrue(e.getMessage(), e.getMessage().contains("rule #1"));
            }
            assertNotNull(OkHttpPinning.partialCertificatePinner(policy(rule), 0));
        }
    }

    @Test
    public void expiredRulePinsNothingUnlessEnforced() {
        String rule = "{\"hosts\":[\"a.example.com\"],\"expires\":\"1970-01-02\",\"pins\":[\"" + P1 + "\"]}";
        assertTrue(pinned(OkHttpPinning.certificatePinner(policy(rule), 1), "a.example.com"));
        assertFalse(pinned(OkHttpPinning.certificatePinner(policy(rule), 2), "a.example.com"));
        Policy enforce = Policy.fromJson("{\"on_expiry\":\"enforce\",\"rule\":[" + rule + "]}");
        assertTrue(pinned(OkHttpPinning.certificatePinner(enforce, 2), "a.example.com"));
    }

    @Test
    public void revocationsIntersectHostPatterns() throws Exception {
        String[][] cases = {
            {"api.example.com", "api.example.com", "api.example.com"},
            {"api.example.com", "web.example.com", null},
            {"api.example.com", "*.example.com", "api.example.com"},
            {"a.b.example.com", "*.example.com", null},
            {"**.example.com", "api.example.com", "api.example.com"},
            {"**.example.com", "example.com", "example.com"},
            {"*.example.com", "example.com", null},
            {"*.example.com", "*.example.com", "*.example.com"},
            {"*.example.com", "**.example.com", "*.example.com"},
            {"**.example.com", "**.example.com", "**.example.com"},
            {"**.api.example.com", "**.example.com", "**.api.example.com"},
            {"*.api.example.com", "**.example.com", "*.api.example.com"},
            {"**.api.example.com", "*.example.com", "api.example.com"},
            {"*.api.example.com", "*.example.com", null},
            {"**.x.api.example.com", "*.example.com", null},
            {"**.example.com", "**.example.org", null},
            {"**.ample.com", "**.example.com", null},
        };
        for (String[] c : cases) {
            for (int flip = 0; flip < 2; flip++) {
                HostPattern a = HostPattern.parse(c[flip], false);
                HostPattern b = HostPattern.parse(c[1 - flip], false);
                HostPattern found = Revocations.intersect(a, false, b, false);
                assertEquals(c[0] + " & " + c[1], c[2], found == null ? null : found.toString());
            }
        }
        HostPattern sub = Revocations.intersect(HostPattern.parse("example.com", true), true,
                HostPattern.parse("*.example.com", false), false);
        assertEquals("*.example.com", sub.toString());
        assertNull(Revocations.intersect(HostPattern.parse("example.com", false), false,
                HostPattern.parse("*.example.com", false), false));
    }

    private static String repeat(String s, int n) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < n; i++) {
            out.append(s);
        }
        return out.toString();
    }
}
