package io.tlspin.bundles;

import java.io.IOException;

/**
 * Where a {@link BundleUpdater} keeps what it accepted, as named blobs. Implement it to keep
 * bundles elsewhere (an encrypted file, a database); {@link FileBundleStore} is the default.
 *
 * <p>Nothing read back is trusted: the updater re-verifies every blob from the application's own
 * keys at start-up, so a store needs no integrity protection of its own, only atomic writes.
 */
public interface BundleStore {
    /** The bytes last written under {@code name}, or null if there are none. */
    byte[] read(String name) throws IOException;

    /**
     * Replace the bytes under {@code name} atomically and durably: a reader, even after a crash
     * or power loss, sees the old bytes or the new ones, never a mix. Return only once the new
     * bytes are on disk.
     */
    void write(String name, byte[] data) throws IOException;
}
