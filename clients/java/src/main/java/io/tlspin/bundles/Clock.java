package io.tlspin.bundles;

/** The time source (tests move it; apps use {@link #SYSTEM}). */
public interface Clock {
    /** The system clock. */
    Clock SYSTEM = new Clock() {
        @Override
        public long millis() {
            return System.currentTimeMillis();
        }
    };

    /** Milliseconds since the epoch. */
    long millis();
}
