package io.tlspin.bundles;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;

import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * The file store refuses planted symbolic links and FIFOs (docs/bundle-format.md §10), also when
 * they are swapped in between its type check and its open (the store's test hook runs there).
 * A FIFO opened read-only would block app start-up until someone writes to it: the timeouts
 * below only end a test that hangs, they assert nothing about time.
 */
public class FileBundleStoreTest {
    private static final byte[] STORED = "{\"stored\": true}".getBytes(StandardCharsets.UTF_8);
    private static final byte[] SECRET = "{\"elsewhere\": true}".getBytes(StandardCharsets.UTF_8);

    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    private File dir;
    private File secret;

    private FileBundleStore store() throws IOException {
        dir = tmp.newFolder("store");
        secret = tmp.newFile("elsewhere.json");
        Files.write(secret.toPath(), SECRET);
        return new FileBundleStore(dir);
    }

    private void link(File at) throws IOException {
        Files.deleteIfExists(at.toPath());
        Files.createSymbolicLink(at.toPath(), secret.toPath());
    }

    private static void fifo(File at) throws IOException {
        Files.deleteIfExists(at.toPath());
        try {
            Process p = new ProcessBuilder("mkfifo", at.getPath()).inheritIO().start();
            assertEquals(0, p.waitFor());
        } catch (InterruptedException e) {
            throw new IOException(e);
        }
    }

    private static void refused(FileBundleStore store, String why) {
        try {
            byte[] got = store.read("bundle.json");
            fail("read " + (got == null ? "nothing" : new String(got, StandardCharsets.UTF_8)));
        } catch (IOException e) {
            assertTrue(e.getMessage(), e.getMessage().contains(why));
        }
    }

    @Test
    public void aRegularFileIsRead() throws IOException {
        FileBundleStore store = store();
        assertNull(store.read("bundle.json"));
        store.write("bundle.json", STORED);
        assertArrayEquals(STORED, store.read("bundle.json"));
    }

    @Test(timeout = 60000)
    public void plantedLinksAndFifosAreRefused() throws IOException {
        FileBundleStore store = store();
        File file = new File(dir, "bundle.json");
        link(file);
        refused(store, "symbolic link");
        fifo(file);
        refused(store, "not a regular file");
    }

    @Test(timeout = 60000)
    public void aLinkSwappedInAfterTheCheckIsNotFollowed() throws IOException {
        final FileBundleStore store = store();
        final File file = new File(dir, "bundle.json");
        store.write("bundle.json", STORED);
        store.beforeOpen = new Runnable() {
            @Override
            public void run() {
                try {
                    link(file);
                } catch (IOException e) {
                    throw new IllegalStateException(e);
                }
            }
        };
        refused(store, "cannot be opened as a regular file");
    }

    @Test(timeout = 60000)
    public void aFifoSwappedInAfterTheCheckDoesNotBlock() throws IOException {
        final FileBundleStore store = store();
        final File file = new File(dir, "bundle.json");
        store.write("bundle.json", STORED);
        store.beforeOpen = new Runnable() {
            @Override
            public void run() {
                try {
                    fifo(file);
                } catch (IOException e) {
                    throw new IllegalStateException(e);
                }
            }
        };
        refused(store, "cannot seek");
    }

    @Test(timeout = 60000)
    public void withoutJavaNioFileLinksAreRefusedAndFifosDoNotBlock() throws IOException {
        store();
        final File file = new File(dir, "bundle.json");
        Files.write(file.toPath(), STORED);
        assertArrayEquals(STORED, FileBundleStore.legacyRead(file, 1 << 20, null));
        link(file);
        try {
            FileBundleStore.legacyRead(file, 1 << 20, null);
            fail("followed a link");
        } catch (IOException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("symbolic link"));
        }
        Files.delete(file.toPath());
        Files.write(file.toPath(), STORED);
        try {
            FileBundleStore.legacyRead(file, 1 << 20, new Runnable() {
                @Override
                public void run() {
                    try {
                        fifo(file);
                    } catch (IOException e) {
                        throw new IllegalStateException(e);
                    }
                }
            });
            fail("read a FIFO");
        } catch (IOException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("cannot seek"));
        }
    }

    @Test
    public void aLinkPlantedAtTheLockFileIsNotFollowed() throws IOException {
        FileBundleStore store = store();
        File target = new File(tmp.getRoot(), "created-through-the-link");
        Files.createSymbolicLink(new File(dir, ".lock").toPath(), target.toPath());
        try {
            store.write("bundle.json", STORED);
            fail("wrote through a lock file that is a link");
        } catch (IOException e) {
            assertFalse(target.exists());
        }
    }
}
