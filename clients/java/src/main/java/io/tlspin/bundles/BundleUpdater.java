package io.tlspin.bundles;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

import javax.net.ssl.X509TrustManager;

import okhttp3.Authenticator;
import okhttp3.Call;
import okhttp3.CertificatePinner;
import okhttp3.CookieJar;
import okhttp3.HttpUrl;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;
import okhttp3.ResponseBody;
import okhttp3.Route;
import okio.Buffer;
import okio.BufferedSource;

/**
 * Keeps the pins in force up to date from signed bundles (docs/bundle-format.md), never unpinned:
 * every fetch, the first one included, goes over a connection pinned with the policy in force.
 * It is the {@link PolicySource} that {@link PinningInterceptor} reads at every request.
 *
 * <p>State (in its {@link BundleStore}): the newest accepted bundle, written twice (a
 * {@code bundle.json} and a {@code state.json} written last), and the one before it. At start
 * every file is re-verified from the application's keys; the newer of the first two that
 * verifies is the anti-rollback floor, so a damaged file lowers nothing. When the bundle in force
 * expires, the embedded fallback policy takes over, with the expired bundle's deny pins.
 */
public final class BundleUpdater implements PolicySource {
    private final String url;
    private final String host;
    private final TrustState root;
    private final Policy fallback;
    private final StoreFiles files;
    private final OkHttpClient base;
    private final X509TrustManager trustManager;
    private final Clock clock;
    private final long timeoutMillis;
    private final int maxBytes;
    private final long clockSkew;
    private final long minVersion;
    private final List<BundleEvent.Observer> observers;
    private final Object refreshLock = new Object();

    private final Object lock = new Object();
    private volatile InForce inForce;
    private volatile Verified accepted;
    private volatile TrustState trust;
    private volatile String etag;

    private static final class InForce {
        final Policy policy;
        final Long expiresAt;
        final Long version;

        InForce(Policy policy, Long expiresAt, Long version) {
            this.policy = policy;
            this.expiresAt = expiresAt;
            this.version = version;
        }
    }

    private BundleUpdater(Builder b, HttpUrl parsed, KeySet keys) {
        this.url = b.url;
        this.host = parsed.host();
        this.root = TrustState.of(keys);
        this.fallback = b.fallback;
        this.files = new StoreFiles(b.store, b.maxBytes);
        this.base = b.client != null ? b.client : new OkHttpClient();
        this.trustManager = b.trustManager != null ? b.trustManager : PinningInterceptor.systemTrustManager();
        this.clock = b.clock;
        this.timeoutMillis = b.timeoutMillis;
        this.maxBytes = b.maxBytes;
        this.clockSkew = b.clockSkewSeconds;
        this.minVersion = b.minVersion;
        this.observers = new CopyOnWriteArrayList<BundleEvent.Observer>(b.observers);
        this.trust = root;
        this.inForce = new InForce(fallback, null, null);
        load();
    }

    /** Start configuring an updater for the bundle at {@code url} (https only). */
    public static Builder builder(String url) {
        return new Builder(url);
    }

    /** Options of a {@link BundleUpdater}; {@link #build()} checks them. */
    public static final class Builder {
        private final String url;
        private List<String> trustedKeys;
        private int threshold = 1;
        private BundleStore store;
        private Policy fallback;
        private OkHttpClient client;
        private X509TrustManager trustManager;
        private Clock clock = Clock.SYSTEM;
        private long timeoutMillis = 10000;
        private int maxBytes = Document.DEFAULT_MAX_BYTES;
        private long clockSkewSeconds = Verifier.DEFAULT_CLOCK_SKEW_SECONDS;
        private long minVersion;
        private final List<BundleEvent.Observer> observers = new ArrayList<BundleEvent.Observer>();

        private Builder(String url) {
            this.url = url;
        }

        /** The signing keys shipped with the app (base64 of the raw Ed25519 key) and how many must sign. */
        public Builder trustedKeys(List<String> keys, int threshold) {
            this.trustedKeys = new ArrayList<String>(keys);
            this.threshold = threshold;
            return this;
        }

        /** Where accepted bundles are kept (required). */
        public Builder store(BundleStore store) {
            this.store = store;
            return this;
        }

        /** Keep accepted bundles in files in this private directory (a {@link FileBundleStore}). */
        public Builder storeDirectory(File directory) {
            this.store = new FileBundleStore(directory);
            return this;
        }

        /** The policy shipped with the app (required); it must pin the update host with an enforced rule. */
        public Builder fallbackPolicy(Policy policy) {
            this.fallback = policy;
            return this;
        }

        /**
         * The app's client, for how the updater reaches the network: its socket factories, DNS,
         * proxy, protocols, connection specs, timeouts and host-name verifier. Nothing else of it
         * is used: its interceptors, Authenticator, CookieJar and cache never see a bundle fetch.
         */
        public Builder client(OkHttpClient client) {
            this.client = client;
            return this;
        }

        /** The trust manager the client verifies servers with (default: the system's). */
        public Builder trustManager(X509TrustManager trustManager) {
            this.trustManager = trustManager;
            return this;
        }

        /** The time source (default: the system clock). */
        public Builder clock(Clock clock) {
            this.clock = clock;
            return this;
        }

        /** How long a whole fetch may take (connect, handshake, headers, body); default 10 s. */
        public Builder timeoutMillis(long millis) {
            this.timeoutMillis = millis;
            return this;
        }

        /** The size cap of a served bundle (default 4 MiB); the download stops past it. */
        public Builder maxBytes(int bytes) {
            this.maxBytes = bytes;
            return this;
        }

        /** How far in the future {@code issued_at} may lie (default 300 s). */
        public Builder clockSkewSeconds(long seconds) {
            this.clockSkewSeconds = seconds;
            return this;
        }

        /** Refuse versions up to this one even on a fresh install (ship the version current at release). */
        public Builder minVersion(long version) {
            this.minVersion = version;
            return this;
        }

        /** Receive every {@link BundleEvent}. */
        public Builder observer(BundleEvent.Observer observer) {
            this.observers.add(observer);
            return this;
        }

        /**
         * Check the options, load the store and return the updater (no network access yet).
         *
         * @throws IllegalArgumentException an option is invalid, e.g. the fallback policy does not
         *     pin the update host, or a trusted key cannot be read
         */
        public BundleUpdater build() {
            HttpUrl parsed = HttpUrl.parse(url);
            if (parsed == null || !parsed.isHttps()) {
                throw new IllegalArgumentException("the bundle URL must be https://host/…, found " + url);
            }
            if (!parsed.username().isEmpty() || !parsed.password().isEmpty()) {
                throw new IllegalArgumentException("the bundle URL must not carry credentials");
            }
            if (store == null || fallback == null || trustedKeys == null) {
                throw new IllegalArgumentException("trustedKeys, store and fallbackPolicy are required");
            }
            if (!fallback.pinsEnforced(parsed.host())) {
                throw new IllegalArgumentException("the fallback policy must pin the update host " + parsed.host()
                        + " with an enforced rule: the first fetch is pinned too, and nothing is ever fetched unpinned");
            }
            if (timeoutMillis <= 0 || maxBytes <= 0 || clockSkewSeconds < 0 || minVersion < 0) {
                throw new IllegalArgumentException("timeout and maxBytes must be positive, skew and minVersion >= 0");
            }
            KeySet keys;
            try {
                keys = KeySet.of(trustedKeys, threshold);
            } catch (BundleException e) {
                throw new IllegalArgumentException("trusted keys: " + e.detail(), e);
            }
            return new BundleUpdater(this, parsed, keys);
        }
    }

    // -- the policy in force ----------------------------------------------------------------

    /**
     * The policy for the next connection: the accepted bundle's while it has not expired, else
     * the embedded fallback policy (plus the expired bundle's deny pins), never no policy.
     */
    @Override
    public Policy currentPolicy() {
        InForce state = inForce;
        if (state.expiresAt != null && clock.millis() / 1000 >= state.expiresAt.longValue()) {
            expire(state);
        }
        return inForce.policy;
    }

    /** The bundle version in force; null while the embedded fallback policy is. */
    public Long version() {
        currentPolicy();
        return inForce.version;
    }

    /** The newest version accepted (expired or not): older ones are refused. */
    public Long acceptedVersion() {
        Verified v = accepted;
        return v == null ? null : Long.valueOf(v.bundle().version());
    }

    /** The keys a new bundle must be signed by, after any rotation. */
    public KeySet signingKeys() {
        return trust.keys();
    }

    /** The embedded policy given at construction. */
    public Policy fallbackPolicy() {
        return fallback;
    }

    /** Add an observer of {@link BundleEvent}s. */
    public void addObserver(BundleEvent.Observer observer) {
        observers.add(observer);
    }

    /**
     * Pin {@code builder}'s connections with this updater's policy ({@link PinningInterceptor#install}):
     * every new TLS connection, WebSockets included, is checked at its handshake before any byte
     * is written, every request re-checks a pooled connection under the policy in force, and
     * cleartext to pinned hosts is refused; so a client built once follows every update. Call it
     * after setting the builder's socket factory and host-name verifier.
     */
    public OkHttpClient.Builder configure(OkHttpClient.Builder builder) {
        return PinningInterceptor.install(builder, this, trustManager, clock);
    }

    /**
     * OkHttp's {@code CertificatePinner} for the policy in force now, mapped as {@code tlspin export
     * --format okhttp-java} maps it, for a client that also has the interceptor ({@link #configure}).
     * It is fixed once the client is built: rebuild the client on the {@code updated} and
     * {@code expired} events if you install it.
     */
    public CertificatePinner certificatePinner() {
        return OkHttpPinning.partialCertificatePinner(currentPolicy(), OkHttpPinning.day(clock.millis()));
    }

    @Override
    public void report(Verdict verdict) {
        Long v = inForce.version;
        notify(new BundleEvent("pin-failure", verdict.describe(), url, clock.millis(), verdict.failure(), v, v));
    }

    private void expire(InForce state) {
        Policy withDenies;
        synchronized (lock) {
            if (inForce != state) {
                return;
            }
            // Revocations outlive their bundle: the fallback may still pin a key the bundle denied.
            Verified v = accepted;
            withDenies = Revocations.withDenies(fallback, v == null ? null : v.policy());
            inForce = new InForce(withDenies, null, null);
        }
        notify(event("expired", "bundle version " + state.version + " expired at "
                + Codec.formatTime(state.expiresAt.longValue()) + "; the embedded fallback policy is in force "
                + "(with the bundle's deny pins) until a newer bundle arrives", BundleException.EXPIRED, state.version));
    }

    // -- loading and applying ---------------------------------------------------------------

    private void load() {
        StoreFiles.Loaded loaded = files.load(root, minVersion, host);
        if (loaded.verified != null) {
            apply(loaded.verified, loaded.etag);
        }
        for (String problem : loaded.problems) {
            notify(event("store-fallback", problem + "; using " + (loaded.verified != null
                    ? "bundle version " + loaded.verified.bundle().version() : "the embedded fallback policy"),
                    null, null));
        }
        currentPolicy(); // an expired stored bundle falls back at once, and says so
    }

    private void apply(Verified verified, String newEtag) {
        synchronized (lock) {
            accepted = verified;
            trust = verified.trust();
            etag = newEtag;
            inForce = new InForce(verified.policy(), Long.valueOf(verified.bundle().expiresAt()),
                    Long.valueOf(verified.bundle().version()));
        }
    }

    // -- refreshing -------------------------------------------------------------------------

    /**
     * Fetch the bundle once, over a connection pinned with the policy in force. Never throws for
     * network errors or bad bundles: they leave the pins in force as they are, go to the observers,
     * and show in the result. Call it from a background thread (WorkManager, an executor).
     */
    public RefreshResult refresh() {
        synchronized (refreshLock) {
            Policy policy = currentPolicy();
            Fetched fetched;
            try {
                fetched = fetch(policy);
            } catch (BundleException e) {
                return reject(e, null);
            } catch (IOException | RuntimeException e) {
                return failed("fetching " + url + " failed: " + e);
            }
            if (fetched.status == 304) {
                return new RefreshResult("not-modified", inForce.version, null, "");
            }
            if (fetched.status != 200) {
                return failed("fetching " + url + " returned HTTP " + fetched.status);
            }
            return receive(fetched.body, fetched.etag);
        }
    }

    /** Apply the acceptance rules to a served body and, if it passes, store it and put it in force. */
    RefreshResult receive(byte[] body, String newEtag) {
        synchronized (refreshLock) {
            Verified before = accepted;
            Verified verified;
            Document document = null;
            try {
                document = Document.parse(body, maxBytes);
                verified = Verifier.accept(document, trust, before == null ? null : before.bundle(), minVersion,
                        clock.millis() / 1000, clockSkew, true, host);
            } catch (BundleException e) {
                return reject(e, document == null ? null : Long.valueOf(document.bundle().version()));
            } catch (RuntimeException e) {
                // Not expected from a verifier that refuses by BundleException: refuse, never crash.
                return failed("verifying the bundle from " + url + " failed: " + e);
            }
            if (verified.unchanged()) {
                if (newEtag != null) {
                    etag = newEtag;
                }
                return new RefreshResult("unchanged", inForce.version, null, "");
            }
            long version = verified.bundle().version();
            try {
                files.save(verified.document(), before == null ? null : before.document(), newEtag);
            } catch (IOException | RuntimeException e) {
                notify(event("store-error", "bundle version " + version + " is in force but could not be stored: " + e,
                        null, Long.valueOf(version)));
            }
            apply(verified, newEtag);
            notify(event("updated", "bundle version " + version + " is in force", null, Long.valueOf(version)));
            return new RefreshResult("updated", Long.valueOf(version), null, "");
        }
    }

    private static final class Fetched {
        final int status;
        final byte[] body;
        final String etag;

        Fetched(int status, byte[] body, String etag) {
            this.status = status;
            this.body = body;
            this.etag = etag;
        }
    }

    private Fetched fetch(Policy inForcePolicy) throws IOException, BundleException {
        // The update channel never fails open, whatever the policy says about expired rules.
        Policy policy = inForcePolicy.enforcingExpired();
        PolicySource pinned = new PolicySource() {
            @Override
            public Policy currentPolicy() {
                return policy;
            }

            @Override
            public void report(Verdict verdict) {
                BundleUpdater.this.report(verdict);
            }
        };
        OkHttpClient client = PinningInterceptor.install(fetchClient(), pinned, trustManager, clock)
                .certificatePinner(OkHttpPinning.partialCertificatePinner(policy, OkHttpPinning.day(clock.millis())))
                .build();
        Request.Builder request = new Request.Builder().url(url)
                .header("Accept", "application/json")
                .header("User-Agent", "tlspin-bundle-updater-java")
                // A fetch an hour apart gains nothing from a pooled connection, which the server
                // may have dropped meanwhile.
                .header("Connection", "close");
        String known = etag;
        if (known != null && accepted != null) {
            request.header("If-None-Match", known);
        }
        Call call = client.newCall(request.build());
        Response response = call.execute();
        try {
            if (response.code() != 200) {
                return new Fetched(response.code(), null, null);
            }
            ResponseBody body = response.body();
            String length = response.header("Content-Length");
            if (length != null && length.matches("[0-9]{1,18}") && Long.parseLong(length) > maxBytes) {
                call.cancel();
                throw new BundleException(BundleException.SIZE, "the server announces " + length
                        + " bytes; at most " + maxBytes + " are accepted");
            }
            Buffer buffer = new Buffer();
            BufferedSource source = body.source();
            while (buffer.size() <= maxBytes) {
                if (source.read(buffer, 65536) == -1) {
                    break;
                }
            }
            if (buffer.size() > maxBytes) {
                // Stop reading: the rest of an oversized body never reaches memory. Cancelling
                // closes the TCP socket at once; a TLS close would first drain what is arriving.
                call.cancel();
                throw new BundleException(BundleException.SIZE, "the body exceeds " + maxBytes
                        + " bytes; download stopped");
            }
            String tag = response.header("ETag");
            if (tag != null && (tag.length() > 512 || !tag.matches("[\\x20-\\x7e]*"))) {
                tag = null;
            }
            return new Fetched(200, buffer.readByteArray(), tag);
        } finally {
            response.close();
        }
    }

    /**
     * The client that fetches bundles, built from scratch rather than from the app's client, so
     * that none of the app's interceptors, {@code Authenticator}, {@code CookieJar}, cache or
     * event listener runs on the update channel: whoever runs the update server (and holds no
     * signing key) must not receive the app's tokens or cookies, nor set its cookies. From the
     * app's client it takes only how to reach the network: socket factories (with the trust
     * manager), DNS, proxy, protocols, TLS versions and cipher suites, timeouts, and its
     * host-name verifier (which the pin check wraps). The proxy authenticator answers the proxy
     * only (the CONNECT request), never a 407 the update server sends inside the tunnel.
     */
    private OkHttpClient.Builder fetchClient() {
        OkHttpClient.Builder b = new OkHttpClient.Builder()
                .socketFactory(base.socketFactory())
                .sslSocketFactory(base.sslSocketFactory(), trustManager)
                .hostnameVerifier(base.hostnameVerifier())
                .dns(base.dns())
                .proxySelector(base.proxySelector())
                .protocols(base.protocols())
                .connectionSpecs(base.connectionSpecs())
                .connectTimeout(base.connectTimeoutMillis(), TimeUnit.MILLISECONDS)
                .readTimeout(base.readTimeoutMillis(), TimeUnit.MILLISECONDS)
                .writeTimeout(base.writeTimeoutMillis(), TimeUnit.MILLISECONDS)
                .retryOnConnectionFailure(base.retryOnConnectionFailure())
                .authenticator(Authenticator.NONE)
                .proxyAuthenticator(proxyOnly(base.proxyAuthenticator()))
                .cookieJar(CookieJar.NO_COOKIES)
                .cache(null)
                .followRedirects(false)
                .followSslRedirects(false)
                .callTimeout(timeoutMillis, TimeUnit.MILLISECONDS);
        if (base.proxy() != null) {
            b.proxy(base.proxy());
        }
        return b;
    }

    private static Authenticator proxyOnly(final Authenticator app) {
        if (app == Authenticator.NONE) {
            return app;
        }
        return new Authenticator() {
            @Override
            public Request authenticate(Route route, Response response) throws IOException {
                Request challenged = response.request();
                return challenged != null && "CONNECT".equals(challenged.method())
                        ? app.authenticate(route, response) : null;
            }
        };
    }

    private RefreshResult reject(BundleException e, Long served) {
        String message = "refused the bundle from " + url + ": " + e.getMessage();
        notify(event("rejected", message, e.reason(), served));
        return new RefreshResult("rejected", inForce.version, e.reason(), message);
    }

    private RefreshResult failed(String message) {
        notify(event("fetch-failed", message, null, null));
        return new RefreshResult("failed", inForce.version, null, message);
    }

    private BundleEvent event(String kind, String message, String reason, Long version) {
        return new BundleEvent(kind, message, url, clock.millis(), reason, version, inForce.version);
    }

    private void notify(BundleEvent event) {
        for (BundleEvent.Observer observer : observers) {
            try {
                observer.onEvent(event);
            } catch (RuntimeException ignored) {
                // An observer that throws must not change what the updater does.
            }
        }
    }
}
