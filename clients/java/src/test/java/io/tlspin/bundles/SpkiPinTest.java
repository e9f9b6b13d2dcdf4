package io.tlspin.bundles;

import static org.junit.Assert.assertEquals;

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;

import org.junit.Test;

/**
 * SPKI pins are the SHA-256 of the SubjectPublicKeyInfo bytes as the certificate holds them, as
 * tlspin's Python engine computes them (the expected pins below are its output for these
 * certificates, made by openssl). An RSA-PSS key is where re-encoding the key could differ.
 */
public class SpkiPinTest {
    private static final String PSS =
            "-----BEGIN CERTIFICATE-----\n" +
            "MIIDbzCCAiKgAwIBAgIUYwTBNFAqiuoYjsr6WFbdUQRIHTUwQgYJKoZIhvcNAQEK\n" +
            "MDWgDzANBglghkgBZQMEAgEFAKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgEF\n" +
            "AKIEAgIA3jATMREwDwYDVQQDDAhwc3MudGVzdDAeFw0yNjEyMDUyMzQzMTlaFw0z\n" +
            "NjEyMDIyMzQzMTlaMBMxETAPBgNVBAMMCHBzcy50ZXN0MIIBIDALBgkqhkiG9w0B\n" +
            "AQoDggEPADCCAQoCggEBAKGpqiBmFuMTEHtMmuV5fu8kMUnsCOhCiPoqn4f2A0Ly\n" +
            "iyvliZMkFhrCOVwOHeVApVsFJH11nRaEU2h341CBwdEQttUJK+RVnIJDHr7Yn0sv\n" +
            "RlPC+t3SfGuG2PhjfyiNm/lMU3WWkowwP6oT/A0uUpYP1QRzowIRCwrF6gN5nsnG\n" +
            "02dzHehgFmH0hoLpOiZSqCdpN+OYV8WBkVaASwI2GLul53yY4jGxTA/Ltbb/mE/p\n" +
            "DjNUah+2o4JFAP+7V/+47fW8qbmtu+B5W1Rvs28v7lGOmUzuTp82d2TFzZO/btGQ\n" +
            "u071xDlqhQL+11ZyHnouI1IKkbUi+PnB5W7WIRuxG4cCAwEAAaNTMFEwHQYDVR0O\n" +
            "BBYEFPh5+PZYPV6isMsg+lJBdW2nmJBoMB8GA1UdIwQYMBaAFPh5+PZYPV6isMsg\n" +
            "+lJBdW2nmJBoMA8GA1UdEwEB/wQFMAMBAf8wQgYJKoZIhvcNAQEKMDWgDzANBglg\n" +
            "hkgBZQMEAgEFAKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgEFAKIEAgIA3gOC\n" +
            "AQEAMwL0j0B8RpKkXM9JSGG+sod/fTJdFAGGUa0w2UqoEHdtiqjC09HfxQG3oJFQ\n" +
            "/GQqPLR5DTKjqkgaFuv1q2Ci1P6STvzzYDtHmLlC6azxrzlnz6bxjn9JM892upS8\n" +
            "xaP14U+6VWn9zJREMS77nsq08ZVYLFSdXEsTMbwkyyfxvLfmCBfPAsF/qzE57VFc\n" +
            "jAtxKOIYPNt9lWvMXuNH/VTWy2fUbk8OVLSM1MJfdz0PuFqweeONKz9ljdiTu3cB\n" +
            "9NiUzYAe5vqZKdmTCnaHSsgqnkgL1l4i0VNRz8yWal+Hv0GzlvvrEWC32c4I8S4l\n" +
            "1GY/uyLZgFLO0XlX3V81Kvf4aA==\n" +
            "-----END CERTIFICATE-----\n";

    private static final String EC =
            "-----BEGIN CERTIFICATE-----\n" +
            "MIIBeDCCAR+gAwIBAgIUFaHv6HspitvkpzPU8g4LQ2kEqAcwCgYIKoZIzj0EAwIw\n" +
            "EjEQMA4GA1UEAwwHZWMudGVzdDAeFw0yNjEyMDUyMzQzMTlaFw0zNjEyMDIyMzQz\n" +
            "MTlaMBIxEDAOBgNVBAMMB2VjLnRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\n" +
            "AASyliRYupIDSrdmbesgwhvKwf2vsjCii37RqHqmYCbK3T5qOQbvAetUeZMA4hvy\n" +
            "+2i3LDw84+nygf42Y1CkBpPeo1MwUTAdBgNVHQ4EFgQU4u1Cj2MzV6jcrhu8x5dE\n" +
            "lBj+njcwHwYDVR0jBBgwFoAU4u1Cj2MzV6jcrhu8x5dElBj+njcwDwYDVR0TAQH/\n" +
            "BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiB9PdXK3fdsM0jwy0nEvcA0sHjYzoRq\n" +
            "cy/x2Q+h11o6vQIgUJ8IjVfgN3qDrmoNqfIHXw0mhj2z0WBFgbJRtdyHUVI=\n" +
            "-----END CERTIFICATE-----\n";

    private static X509Certificate cert(String pem) throws Exception {
        return (X509Certificate) CertificateFactory.getInstance("X.509")
                .generateCertificate(new ByteArrayInputStream(pem.getBytes(StandardCharsets.US_ASCII)));
    }

    private static String pin(String pem) throws Exception {
        // Sliced from the DER (no fallback), and the same bytes the JDK's key encoding gives here.
        byte[] spki = Pin.spki(cert(pem).getEncoded());
        assertEquals(Codec.base64(cert(pem).getPublicKey().getEncoded()), Codec.base64(spki));
        assertEquals(Codec.base64(Codec.sha256(spki)), Codec.base64(Pin.spkiSha256(cert(pem))));
        return "sha256/" + Codec.base64(Codec.sha256(spki));
    }

    @Test
    public void rsaPssPinMatchesTlspin() throws Exception {
        assertEquals("sha256/0AIY9U1xdvSYt6YMeknkLUim8XqejkKhR/Vy/eduBuo=", pin(PSS));
    }

    @Test
    public void ecPinMatchesTlspinAndOkHttp() throws Exception {
        assertEquals("sha256/A2BWIK0mAOfNffdI8HxC3FRazUUxagdwHNVr+65p0EU=", pin(EC));
        assertEquals(pin(EC), okhttp3.CertificatePinner.pin(cert(EC)));
    }
}
