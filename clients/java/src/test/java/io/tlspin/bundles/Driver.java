package io.tlspin.bundles;

import java.io.BufferedReader;
import java.io.File;
import java.io.FileInputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Proxy;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;

import okhttp3.Authenticator;
import okhttp3.Cookie;
import okhttp3.Credentials;
import okhttp3.CookieJar;
import okhttp3.Dns;
import okhttp3.HttpUrl;
import okhttp3.Interceptor;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;
import okhttp3.Route;
import okhttp3.WebSocket;
import okhttp3.WebSocketListener;

/**
 * The Java side of tests/bundles/test_java_client.py: one JSON command per stdin line, one JSON
 * answer per stdout line. The JVM trusts exactly the CA certificates it is given (through its
 * own TLS stack, a KeyStore and a TrustManagerFactory), and every host name resolves to 127.0.0.1.
 *
 * <p>Commands: {@code init} (build an updater; {@code app_client}: its base client carries an
 * app's credentials, as apps' clients do: an interceptor adding a bearer token, an Authenticator,
 * a CookieJar), {@code clock}, {@code refresh}, {@code get} (an HTTPS request with the pins of the
 * updater: {@code both}, only the {@code interceptor}, only the {@code pinner}, {@code none}, or
 * {@code shared}: one client built at {@code init}, whose connections are pooled), {@code ws} (a
 * WebSocket with the updater's pins: send one message, wait for one), {@code status},
 * {@code verify} (one document).
 */
public final class Driver {
    private BundleUpdater updater;
    private X509TrustManager trustManager;
    private SSLContext ssl;
    private Long now;
    private OkHttpClient shared;
    private final List<Object> cookiesSaved = Collections.synchronizedList(new ArrayList<Object>());
    private final List<Object> events = Collections.synchronizedList(new ArrayList<Object>());
    private final Clock clock = new Clock() {
        @Override
        public long millis() {
            Long fixed = now;
            return fixed != null ? fixed.longValue() : System.currentTimeMillis();
        }
    };

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        Driver driver = new Driver();
        String line;
        while ((line = in.readLine()) != null) {
            Map<String, Object> answer;
            try {
                answer = driver.run(cast(Json.parse(line.getBytes(StandardCharsets.UTF_8), Long.MAX_VALUE)));
            } catch (Exception e) {
                answer = new LinkedHashMap<String, Object>();
                answer.put("error", e.toString());
            }
            out.println(VectorRunner.json(answer));
        }
        // End of input ends the driver: OkHttp's dispatcher threads are not daemons and stay
        // idle for a minute, which would keep the JVM (and the suite's teardown) waiting.
        System.exit(0);
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> cast(Object value) {
        return (Map<String, Object>) value;
    }

    @SuppressWarnings("unchecked")
    private static List<String> strings(Object value) {
        return (List<String>) value;
    }

    private Map<String, Object> run(Map<String, Object> cmd) throws Exception {
        String name = (String) cmd.get("cmd");
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        if (name.equals("init")) {
            init(cmd);
        } else if (name.equals("clock")) {
            now = cmd.get("now") == Json.NULL ? null : Long.valueOf(Codec.time(cmd.get("now"), "now") * 1000);
        } else if (name.equals("refresh")) {
            RefreshResult r = updater.refresh();
            out.put("outcome", r.outcome);
            out.put("version", r.version == null ? Json.NULL : r.version);
            out.put("reason", r.reason == null ? Json.NULL : r.reason);
            out.put("message", r.message);
        } else if (name.equals("get")) {
            get((String) cmd.get("url"), (String) cmd.get("pinning"), out);
        } else if (name.equals("ws")) {
            webSocket((String) cmd.get("url"), (String) cmd.get("pinning"), out);
        } else if (name.equals("status")) {
            Long v = updater.version();
            Long a = updater.acceptedVersion();
            out.put("version", v == null ? Json.NULL : v);
            out.put("accepted", a == null ? Json.NULL : a);
            out.put("policy", Json.parse(updater.currentPolicy().toJson().getBytes(StandardCharsets.UTF_8), Long.MAX_VALUE));
            out.put("events", new ArrayList<Object>(events));
            out.put("cookies_saved", new ArrayList<Object>(cookiesSaved));
        } else if (name.equals("verify")) {
            verify(cmd, out);
        } else {
            throw new IllegalArgumentException("unknown command " + name);
        }
        return out;
    }

    private void init(Map<String, Object> cmd) throws Exception {
        events.clear();
        KeyStore roots = KeyStore.getInstance(KeyStore.getDefaultType());
        roots.load(null, null);
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        int n = 0;
        for (String path : strings(cmd.get("cas"))) {
            InputStream pem = new FileInputStream(path);
            try {
                for (Certificate cert : factory.generateCertificates(pem)) {
                    roots.setCertificateEntry("ca" + n++, cert);
                }
            } finally {
                pem.close();
            }
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(roots);
        for (TrustManager tm : tmf.getTrustManagers()) {
            if (tm instanceof X509TrustManager) {
                trustManager = (X509TrustManager) tm;
            }
        }
        ssl = SSLContext.getInstance("TLS");
        ssl.init(null, new TrustManager[] {trustManager}, null);
        now = cmd.get("now") == null || cmd.get("now") == Json.NULL ? null
                : Long.valueOf(Codec.time(cmd.get("now"), "now") * 1000);
        BundleUpdater.Builder b = BundleUpdater.builder((String) cmd.get("url"))
                .trustedKeys(strings(cmd.get("keys")), ((Long) cmd.get("threshold")).intValue())
                .storeDirectory(new File((String) cmd.get("store")))
                .fallbackPolicy(Policy.fromJson((String) cmd.get("fallback")))
                .client(Boolean.TRUE.equals(cmd.get("app_client")) ? appClient(cmd.get("proxy_port")) : base().build())
                .trustManager(trustManager)
                .clock(clock)
                .observer(new BundleEvent.Observer() {
                    @Override
                    public void onEvent(BundleEvent event) {
                        Map<String, Object> e = new LinkedHashMap<String, Object>();
                        e.put("kind", event.kind);
                        e.put("reason", event.reason == null ? Json.NULL : event.reason);
                        e.put("message", event.message);
                        events.add(e);
                    }
                });
        if (cmd.containsKey("timeout_ms")) {
            b.timeoutMillis((Long) cmd.get("timeout_ms"));
        }
        if (cmd.containsKey("max_bytes")) {
            b.maxBytes(((Long) cmd.get("max_bytes")).intValue());
        }
        updater = b.build();
        shared = updater.configure(base()).build();
    }

    /**
     * A client set up as apps set theirs up: the user's credentials go with every request; with
     * {@code proxyPort}, through the HTTP proxy on 127.0.0.1 there, with its credentials.
     */
    private OkHttpClient appClient(Object proxyPort) {
        cookiesSaved.clear();
        OkHttpClient.Builder builder = base();
        if (proxyPort instanceof Long) {
            builder.proxy(new Proxy(Proxy.Type.HTTP, new InetSocketAddress("127.0.0.1", ((Long) proxyPort).intValue())))
                    .proxyAuthenticator(new Authenticator() {
                        @Override
                        public Request authenticate(Route route, Response response) {
                            return response.request().newBuilder()
                                    .header("Proxy-Authorization", Credentials.basic("proxy-user", "proxy-password"))
                                    .build();
                        }
                    });
        }
        return builder
                .addInterceptor(new Interceptor() {
                    @Override
                    public Response intercept(Chain chain) throws java.io.IOException {
                        return chain.proceed(chain.request().newBuilder()
                                .header("Authorization", "Bearer USER-SESSION-TOKEN").build());
                    }
                })
                .authenticator(new Authenticator() {
                    @Override
                    public Request authenticate(Route route, Response response) {
                        return response.request().newBuilder()
                                .header("Authorization", "Basic dXNlcjpwYXNzd29yZA==")
                                .header("X-Refresh-Token", "REFRESH-TOKEN").build();
                    }
                })
                .cookieJar(new CookieJar() {
                    @Override
                    public void saveFromResponse(HttpUrl url, List<Cookie> cookies) {
                        for (Cookie cookie : cookies) {
                            cookiesSaved.add(cookie.name());
                        }
                    }

                    @Override
                    public List<Cookie> loadForRequest(HttpUrl url) {
                        return Collections.singletonList(new Cookie.Builder().name("session")
                                .value("USER-SESSION-COOKIE").domain(url.host()).build());
                    }
                })
                .build();
    }

    private OkHttpClient.Builder base() {
        return new OkHttpClient.Builder()
                .sslSocketFactory(ssl.getSocketFactory(), trustManager)
                .retryOnConnectionFailure(false)
                .dns(new Dns() {
                    @Override
                    public List<InetAddress> lookup(String hostname) throws java.net.UnknownHostException {
                        // Loopback only: every test server binds 127.0.0.1.
                        return Collections.singletonList(InetAddress.getByName("127.0.0.1"));
                    }
                });
    }

    private void get(String url, String pinning, Map<String, Object> out) {
        OkHttpClient.Builder builder = base();
        if (pinning.equals("both")) {
            updater.configure(builder).certificatePinner(updater.certificatePinner());
        } else if (pinning.equals("interceptor")) {
            builder.addNetworkInterceptor(new PinningInterceptor(updater, trustManager, clock));
        } else if (pinning.equals("verifier")) {
            builder.hostnameVerifier(new PinningHostnameVerifier(builder.build().hostnameVerifier(), updater,
                    trustManager, clock));
        } else if (pinning.equals("pinner")) {
            builder.certificatePinner(OkHttpPinning.partialCertificatePinner(updater.currentPolicy(),
                    OkHttpPinning.day(clock.millis())));
        } else if (!pinning.equals("none") && !pinning.equals("shared")) {
            throw new IllegalArgumentException("pinning must be both, interceptor, verifier, pinner, shared or none");
        }
        OkHttpClient client = pinning.equals("shared") ? shared : builder.build();
        try {
            Response response = client.newCall(new Request.Builder().url(url).build()).execute();
            try {
                out.put("ok", Boolean.TRUE);
                out.put("status", Long.valueOf(response.code()));
            } finally {
                response.close();
            }
        } catch (Exception e) {
            out.put("ok", Boolean.FALSE);
            out.put("failure", e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    /** Open a WebSocket (with an Authorization header), send one message, wait for one. */
    private void webSocket(String url, String pinning, Map<String, Object> out) throws InterruptedException {
        OkHttpClient client = pinning.equals("shared") ? shared
                : pinning.equals("both") ? updater.configure(base()).build() : base().build();
        final CountDownLatch done = new CountDownLatch(1);
        final Map<String, Object> result = Collections.synchronizedMap(new LinkedHashMap<String, Object>());
        WebSocket socket = client.newWebSocket(new Request.Builder().url(url)
                .header("Authorization", "Bearer WEBSOCKET-TOKEN").build(), new WebSocketListener() {
                    @Override
                    public void onOpen(WebSocket ws, Response response) {
                        ws.send("app message");
                    }

                    @Override
                    public void onMessage(WebSocket ws, String text) {
                        first(Boolean.TRUE, "received", text);
                        ws.close(1000, null);
                    }

                    @Override
                    public void onFailure(WebSocket ws, Throwable t, Response response) {
                        first(Boolean.FALSE, "failure", t.getClass().getSimpleName() + ": " + t.getMessage());
                    }

                    /** The first outcome counts: the close that follows a message is not one. */
                    private void first(Boolean ok, String key, String value) {
                        synchronized (result) {
                            if (!result.containsKey("ok")) {
                                result.put("ok", ok);
                                result.put(key, value);
                            }
                        }
                        done.countDown();
                    }
                });
        if (!done.await(60, TimeUnit.SECONDS)) {
            socket.cancel();
        }
        synchronized (result) {
            if (!result.containsKey("ok")) {
                result.put("ok", Boolean.FALSE);
                result.put("failure", "no answer");
            }
            out.putAll(result);
        }
    }

    private void verify(Map<String, Object> cmd, Map<String, Object> out) throws Exception {
        byte[] data = java.nio.file.Files.readAllBytes(new File((String) cmd.get("document")).toPath());
        TrustState trust = TrustState.of(KeySet.of(strings(cmd.get("keys")), ((Long) cmd.get("threshold")).intValue()));
        try {
            Verified v = Verifier.accept(Document.parse(data, Document.DEFAULT_MAX_BYTES), trust, null, 0,
                    Codec.time(cmd.get("now"), "now"), Verifier.DEFAULT_CLOCK_SKEW_SECONDS, true,
                    (String) cmd.get("update_host"));
            out.put("verdict", "accepted");
            out.put("version", Long.valueOf(v.bundle().version()));
            out.put("policy", v.policy().toValue());
        } catch (BundleException e) {
            out.put("verdict", "refused");
            out.put("reason", e.reason());
        }
    }
}
