package io.tlspin.bundles;

import java.io.File;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;

/**
 * The store's file access without following links and without blocking, as tlspin's Python store
 * does with {@code O_NOFOLLOW | O_NONBLOCK} and {@code fstat}. Java 8 has neither a non-blocking
 * open nor an {@code fstat} of an open file, so:
 *
 * <ul>
 *   <li>the path is refused unless {@code lstat} says it is a regular file (not a link, FIFO,
 *       socket, device or directory);
 *   <li>it is opened with {@code NOFOLLOW_LINKS} ({@code O_NOFOLLOW}): a link swapped in since
 *       the check is refused by the kernel;
 *   <li>for reading and writing ({@code O_RDWR}, never creating, never writing): on Linux, and
 *       so on Android, opening a FIFO that way returns at once, where a read-only open waits
 *       for a writer, which would hang app start-up;
 *   <li>the opened file must seek ({@code lseek}): a regular file can, a FIFO or socket swapped in
 *       since the check cannot, so the type is checked on what was opened, not on the path.
 * </ul>
 *
 * Needs java.nio.file (Android API 26): kept in a class of its own, loaded only when called;
 * {@link FileBundleStore} falls back to java.io below that (see its {@code legacyRead}).
 */
final class NoFollowFiles {
    private NoFollowFiles() {
    }

    /** The bytes of {@code file} (at most {@code maxBytes}), or null if there is no such file. */
    static byte[] read(File file, long maxBytes, Runnable beforeOpen) throws IOException {
        Path path = file.toPath();
        BasicFileAttributes attributes;
        try {
            attributes = Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        } catch (NoSuchFileException e) {
            return null;
        }
        if (attributes.isSymbolicLink()) {
            throw new IOException(file + " is a symbolic link: store files are read only when they are "
                    + "regular files, never through a link");
        }
        if (!attributes.isRegularFile()) {
            throw new IOException(file + " is not a regular file (a FIFO or device would block or never end)");
        }
        if (beforeOpen != null) {
            beforeOpen.run();
        }
        Set<OpenOption> options = new HashSet<OpenOption>(Arrays.<OpenOption>asList(
                StandardOpenOption.READ, StandardOpenOption.WRITE, LinkOption.NOFOLLOW_LINKS));
        SeekableByteChannel channel;
        try {
            channel = Files.newByteChannel(path, options);
        } catch (NoSuchFileException e) {
            return null;
        } catch (IOException e) {
            // ELOOP: a link was swapped in; EACCES: not a file the app may write (its own are 0600).
            throw new IOException(file + " cannot be opened as a regular file of the app's own ("
                    + e.getMessage() + "): not read", e);
        }
        try {
            try {
                channel.position(0);
            } catch (IOException e) {
                throw new IOException(file + " is not a regular file (it cannot seek: a FIFO or socket "
                        + "replaced it): not read", e);
            }
            return FileBundleStore.readAll(channel, file, maxBytes);
        } finally {
            channel.close();
        }
    }

    /** The lock file, created 0600-style if missing, never through a link. */
    static FileChannel lockChannel(File file) throws IOException {
        return FileChannel.open(file.toPath(), StandardOpenOption.CREATE, StandardOpenOption.READ,
                StandardOpenOption.WRITE, LinkOption.NOFOLLOW_LINKS);
    }

    /** A new file that must not exist yet ({@code O_EXCL}: no link or file at its name is written through). */
    static FileChannel createNew(File file) throws IOException {
        return FileChannel.open(file.toPath(), StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
    }
}
