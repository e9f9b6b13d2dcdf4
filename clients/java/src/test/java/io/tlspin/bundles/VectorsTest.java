package io.tlspin.bundles;

import static org.junit.Assert.assertEquals;

import java.io.File;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Map;

import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.Parameterized;
import org.junit.runners.Parameterized.Parameters;

/** Every conformance vector of tests/vectors/bundles gives its expected verdict, reason, policy, pins. */
@RunWith(Parameterized.class)
public class VectorsTest {
    private static final File ROOT = VectorRunner.root();

    @Parameters(name = "{0}")
    public static Collection<Object[]> vectors() throws Exception {
        Map<String, Object> manifest = VectorRunner.manifest(ROOT);
        Collection<Object[]> out = new ArrayList<Object[]>();
        for (String section : new String[] {"vectors", "canonical"}) {
            for (Map<String, Object> item : VectorRunner.list(manifest, section)) {
                out.add(new Object[] {section + "/" + item.get("name"), section, item});
            }
        }
        return out;
    }

    private final String name;
    private final String section;
    private final Map<String, Object> item;

    public VectorsTest(String name, String section, Map<String, Object> item) {
        this.name = name;
        this.section = section;
        this.item = item;
    }

    @Test
    public void meetsExpectation() throws Exception {
        Map<String, Object> got = section.equals("vectors")
                ? VectorRunner.evaluate(item, ROOT) : VectorRunner.canonical(item, ROOT);
        assertEquals(name + ": " + item.get("about"), VectorRunner.json(item.get("expect")), VectorRunner.json(got));
    }
}
