package io.tlspin.bundles;

/** Where {@link PinningInterceptor} reads the policy for each request ({@link BundleUpdater} is one). */
public interface PolicySource {
    /** The policy in force now. */
    Policy currentPolicy();

    /** Called with each report-only failure, and each refusal (never throws into the request). */
    void report(Verdict verdict);
}
