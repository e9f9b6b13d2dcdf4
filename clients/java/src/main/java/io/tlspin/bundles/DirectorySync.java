package io.tlspin.bundles;

import java.io.File;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;

/**
 * fsync of a directory, so that a rename in it is durable. Needs java.nio.file (Android API 26):
 * kept in a class of its own, loaded only when called, and skipped where it is missing (the
 * rename is still atomic there, only its durability across a power cut is not certain).
 */
final class DirectorySync {
    private DirectorySync() {
    }

    static void sync(File directory) {
        try {
            FileChannel channel = FileChannel.open(directory.toPath(), StandardOpenOption.READ);
            try {
                channel.force(true);
            } finally {
                channel.close();
            }
        } catch (IOException | LinkageError | UnsupportedOperationException e) {
            // Not every platform can open a directory (or has java.nio.file): atomicity holds anyway.
        }
    }
}
