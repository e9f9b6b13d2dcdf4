package io.tlspin.bundles;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.RandomAccessFile;
import java.nio.channels.FileLock;
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

    @Override
    public byte[] read(String name) throws IOException {
        File file = new File(directory, check(name));
        if (!file.exists()) {
            return null;
        }
        if (!file.isFile()) {
            // A FIFO or device would block or never end: only regular files are read.
            throw new IOException(file + " is not a regular file");
        }
        InputStream in = new FileInputStream(file);
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] chunk = new byte[65536];
            int n;
            while ((n = in.read(chunk)) != -1) {
                out.write(chunk, 0, n);
                if (out.size() > maxBytes) {
                    throw new IOException(file + " is larger than " + maxBytes + " bytes");
                }
            }
            return out.toByteArray();
        } finally {
            in.close();
        }
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
            RandomAccessFile lockFile = new RandomAccessFile(new File(directory, ".lock"), "rw");
            try {
                FileLock held = lockFile.getChannel().lock();
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
            FileOutputStream out = new FileOutputStream(tmp);
            try {
                ownerOnly(tmp, false);
                out.write(data);
                out.flush();
                out.getFD().sync();
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
