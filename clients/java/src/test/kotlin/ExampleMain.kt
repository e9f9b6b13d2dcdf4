// Runs the README's PinnedHttp example against loopback servers (tests/bundles/test_java_client.py).
// Arguments: files dir, bundle URL, trusted key, fallback policy JSON, good URL, forged URL, CA PEMs…
import java.io.File
import java.io.FileInputStream
import java.net.InetAddress
import java.security.KeyStore
import java.security.cert.CertificateFactory
import javax.net.ssl.SSLContext
import javax.net.ssl.SSLPeerUnverifiedException
import javax.net.ssl.TrustManagerFactory
import javax.net.ssl.X509TrustManager
import okhttp3.Dns
import okhttp3.OkHttpClient
import okhttp3.Request

private fun trustOnly(pems: List<String>): X509TrustManager {
    val roots = KeyStore.getInstance(KeyStore.getDefaultType())
    roots.load(null, null)
    val certs = CertificateFactory.getInstance("X.509")
    pems.forEachIndexed { n, path ->
        FileInputStream(path).use { roots.setCertificateEntry("ca$n", certs.generateCertificate(it)) }
    }
    val factory = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm())
    factory.init(roots)
    return factory.trustManagers.filterIsInstance<X509TrustManager>().first()
}

private operator fun <T> Array<T>.component6(): T = this[5]

fun main(args: Array<String>) {
    val (filesDir, bundleUrl, trustedKey, fallback, goodUrl, forgedUrl) = args
    val trust = trustOnly(args.drop(6))
    val ssl = SSLContext.getInstance("TLS")
    ssl.init(null, arrayOf(trust), null)
    val base = OkHttpClient.Builder()
        .sslSocketFactory(ssl.socketFactory, trust)
        .dns(object : Dns {
            override fun lookup(hostname: String) = listOf(InetAddress.getByName("127.0.0.1"))
        })
        .build()
    val http = PinnedHttp(
        File(filesDir),
        bundleUrl = bundleUrl,
        trustedKeys = listOf(trustedKey),
        fallbackPolicyJson = fallback,
        base = base,
        serverTrust = trust
    )
    val refreshed = http.refresh()
    val good = http.client.newCall(Request.Builder().url(goodUrl).build()).execute()
        .use { it.code() }
    val forged = try {
        http.client.newCall(Request.Builder().url(forgedUrl).build()).execute()
            .use { it.code().toString() }
    } catch (e: SSLPeerUnverifiedException) {
        "refused"
    }
    println("{\"refresh\": \"${refreshed.outcome}\", \"version\": ${refreshed.version}, " +
        "\"good\": $good, \"forged\": \"$forged\"}")
}
