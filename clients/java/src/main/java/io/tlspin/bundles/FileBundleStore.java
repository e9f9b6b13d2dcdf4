package io.tlspin.bundles;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.ReadableByteChannel;
import java.security.SecureRandom;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The default {@link BundleStore}: one file per name in a private directory, each replaced
 * atomically (written to a temporary file in the same directory, synced, renamed over the old
 * file, the directory synced), under a lock file that serialises writers across processes.
 * On Android, give it a directory under {@code Context.getFilesDir()} (never external storage).
 */
public final class FileBundleStore implements BundleStore {
    private static final Map<String, ReentrantLock> LOCKS = new HashMap<String, ReentrantLock>();
    private static final SecureRandom RANDOM = new SecureRandom();

    private final File directory;
    private final long maxBytes;

    /**
     * @param directory created (readable by its owner only) on the first write
     * @param maxBytes files larger than this are refused unread
     */
    public FileBundleStore(File directory, long maxBytes) {
        this.directory = directory;
        this.maxBytes = maxBytes;
    }

    /** A store whose files may hold a chain of 32 rotations plus two bundles of 4 MiB each. */
    public FileBundleStore(File directory) {
        this(directory, (long) Document.DEFAULT_MAX_BYTES * (Document.MAX_CHAIN + 2));
    }

    /** The directory. */
    public File directory() {
        return directory;
    }

    /**
     * For tests only: runs between the type check and the open, where a local attacker could
     * swap the file for a link or a FIFO.
     */
    volatile Runnable beforeOpen;

    /**
     * The bytes of a regular file under {@code name}, or null if there is none. A symbolic link,
     * FIFO, socket or device at that name is refused (an IOException), never followed, and never
     * blocks, even when swapped in between the check and the open (see {@link NoFollowFiles}).
     */
    @Override
    public byte[] read(String name) throws IOException {
        File file = new File(directory, check(name));
        try {
            return NoFollowFiles.read(file, maxBytes, beforeOpen);
        } catch (LinkageError e) {
            return legacyRead(file, maxBytes, beforeOpen); // no java.nio.file (Android below API 26)
        }
    }

    /**
     * {@link #read} without java.nio.file: links are refused when they are seen (the canonical path
     * differs), and the open is for reading and writing (a FIFO does not block it), then must seek.
     * Residual risk there: a link swapped in between the check and the open is followed (only
     * java.nio.file has O_NOFOLLOW), and a file deleted in between is created empty (and refused).
     */
    static byte[] legacyRead(File file, long maxBytes, Runnable beforeOpen) throws IOException {
        File parent = file.getAbsoluteFile().getParentFile();
        boolean link = parent != null
                && !new File(parent.getCanonicalFile(), file.getName()).getCanonicalPath()
                        .equals(new File(parent.getCanonicalFile(), file.getName()).getPath());
        if (link) {
            throw new IOException(file + " is a symbolic link: store files are read only when they are "
                    + "regular files, never through a link");
        }
        if (!file.exists()) {
            return null;
        }
        if (!file.isFile()) {
            throw new IOException(file + " is not a regular file (a FIFO or device would block or never end)");
        }
        if (beforeOpen != null) {
            beforeOpen.run();
        }
        RandomAccessFile opened = new RandomAccessFile(file, "rw");
        try {
            try {
                opened.seek(0);
            } catch (IOException e) {
                throw new IOException(file + " is not a regular file (it cannot seek: a FIFO or socket "
                        + "replaced it): not read", e);
            }
            return readAll(opened.getChannel(), file, maxBytes);
        } finally {
            opened.close();
        }
    }

    static byte[] readAll(ReadableByteChannel channel, File file, long maxBytes) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteBuffer chunk = ByteBuffer.allocate(65536);
        while (channel.read(chunk) != -1) {
            out.write(chunk.array(), 0, chunk.position());
            chunk.clear();
            if (out.size() > maxBytes) {
                throw new IOException(file + " is larger than " + maxBytes + " bytes");
            }
        }
        return out.toByteArray();
    }

    @Override
    public void write(String name, byte[] data) throws IOException {
        check(name);
        if (!directory.isDirectory() && !directory.mkdirs() && !directory.isDirectory()) {
            throw new IOException("cannot create " + directory);
        }
        ownerOnly(directory, true);
        ReentrantLock lock = lockFor(directory);
        lock.lock();
        try {
            FileChannel lockFile = lockChannel(new File(directory, ".lock"));
            try {
                FileLock held = lockFile.lock();
                try {
                    replace(name, data);
                } finally {
                    held.release();
                }
            } finally {
                lockFile.close();
            }
        } finally {
            lock.unlock();
        }
    }

    private void replace(String name, byte[] data) throws IOException {
        File target = new File(directory, name);
        File tmp = new File(directory, "." + name + "." + Long.toHexString(RANDOM.nextLong()) + ".tmp");
        boolean done = false;
        try {
            FileChannel out = createNew(tmp);
            try {
                ownerOnly(tmp, false);
                ByteBuffer rest = ByteBuffer.wrap(data);
                while (rest.hasRemaining()) {
                    out.write(rest);
                }
                out.force(true);
            } finally {
                out.close();
            }
            // rename(2) replaces the old file in one step: a reader sees old or new, never a mix.
            if (!tmp.renameTo(target)) {
                throw new IOException("cannot rename " + tmp + " to " + target);
            }
            done = true;
        } finally {
            if (!done && tmp.exists() && !tmp.delete()) {
                tmp.deleteOnExit();
            }
        }
        DirectorySync.sync(directory);
    }

    /** The lock file, never opened through a planted link where java.nio.file exists. */
    private static FileChannel lockChannel(File file) throws IOException {
        try {
            return NoFollowFiles.lockChannel(file);
        } catch (LinkageError e) {
            return new RandomAccessFile(file, "rw").getChannel();
        }
    }

    /** A new temporary file, never written through a planted link where java.nio.file exists. */
    private static FileChannel createNew(File file) throws IOException {
        try {
            return NoFollowFiles.createNew(file);
        } catch (LinkageError e) {
            return new FileOutputStream(file).getChannel();
        }
    }

    private static String check(String name) {
        if (name.isEmpty() || name.startsWith(".") || name.indexOf('/') >= 0 || name.indexOf(File.separatorChar) >= 0) {
            throw new IllegalArgumentException("a store name is a plain file name, found " + name);
        }
        return name;
    }

    private static void ownerOnly(File file, boolean directory) {
        // Best effort (0600 / 0700): on Android the app's files directory is private already.
        file.setReadable(false, false);
        file.setWritable(false, false);
        file.setReadable(true, true);
        file.setWritable(true, true);
        if (directory) {
            file.setExecutable(false, false);
            file.setExecutable(true, true);
        }
    }

    private static ReentrantLock lockFor(File directory) throws IOException {
        String key = directory.getCanonicalPath();
        synchronized (LOCKS) {
            ReentrantLock lock = LOCKS.get(key);
            if (lock == null) {
                lock = new ReentrantLock();
                LOCKS.put(key, lock);
            }
            return lock;
        }
    }
}
