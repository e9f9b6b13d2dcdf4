"""Exports checked by their real consumers on loopback: curl and OkHttp (Debian's jars, javac)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cli.world import World, invoke, require_tool


def _policy(world: World, *pins: str) -> Path:
    body = ", ".join(f'"{p}"' for p in pins)
    return world.write("p.toml", f'[[rule]]\nhosts = ["localhost"]\npins = [{body}]\n')


def _curl(curl: str, world: World, port: int, value: str) -> int:
    cmd = [
        curl,
        "--silent",
        "--show-error",
        "--output",
        os.devnull,
        "--max-time",
        "20",
        "--noproxy",
        "*",
        "--cacert",
        str(world.both_pem),
        "--pinnedpubkey",
        value,
        "--resolve",
        f"localhost:{port}:127.0.0.1",
        f"https://localhost:{port}/",
    ]
    return subprocess.run(cmd, capture_output=True, check=False, timeout=30).returncode


def test_curl_accepts_real_server_and_refuses_forged_one(world: World) -> None:
    """curl fed the exported value verbatim: exit 0 for the real server, 90 for a forged leaf."""
    curl = require_tool("curl", "TLSPIN_CURL")
    result = invoke(
        "export", str(_policy(world, world.leaf_pin, world.backup_pin)), "--format", "curl"
    )
    assert result.exit_code == 0, result.stderr
    value = result.stdout.strip()
    assert value == f"sha256//{world.leaf_pin[7:]};sha256//{world.backup_pin[7:]}"
    assert _curl(curl, world, world.server.port, value) == 0
    assert _curl(curl, world, world.rogue_server.port, value) == 90


def test_curl_ignores_ca_pins_as_warned(world: World) -> None:
    """A CA-only pin set (exported with --force) makes curl refuse even the real server."""
    curl = require_tool("curl", "TLSPIN_CURL")
    path = world.write(
        "ca.toml",
        f'[[rule]]\nhosts = ["localhost"]\n'
        f'pins = [{{ pin = "{world.inter_pin}", role = "intermediate" }}, '
        f'{{ pin = "{world.root_pin}", role = "root" }}]\n',
    )
    refused = invoke("export", str(path), "--format", "curl")
    assert refused.exit_code == 1
    assert "leaf key" in refused.stderr
    forced = invoke("export", str(path), "--format", "curl", "--force")
    assert forced.exit_code == 0
    assert _curl(curl, world, world.server.port, forced.stdout.strip()) == 90


JAVA_PROGRAM = """\
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;
import okhttp3.CertificatePinner;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;

public class PinCheck {
    public static void main(String[] args) throws Exception {
        // Trust exactly the CAs in args[0] (the test root and the rogue root).
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
        store.load(null, null);
        int n = 0;
        try (InputStream in = new FileInputStream(args[0])) {
            for (java.security.cert.Certificate cert : factory.generateCertificates(in)) {
                store.setCertificateEntry("ca" + n++, cert);
            }
        }
        String algorithm = TrustManagerFactory.getDefaultAlgorithm();
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(algorithm);
        tmf.init(store);
        X509TrustManager trust = (X509TrustManager) tmf.getTrustManagers()[0];
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, new TrustManager[] {trust}, null);
        CertificatePinner p = %EXPRESSION%;
        OkHttpClient client = new OkHttpClient.Builder()
            .sslSocketFactory(tls.getSocketFactory(), trust)
            .certificatePinner(p)
            .build();
        for (int i = 1; i < args.length; i++) {
            Request request = new Request.Builder().url(args[i]).build();
            try (Response response = client.newCall(request).execute()) {
                System.out.println("OK " + response.code());
            } catch (SSLPeerUnverifiedException e) {
                System.out.println("PINNING FAILED " + e.getMessage().split("\\n")[0]);
            } catch (IOException e) {
                System.out.println("IO ERROR " + e);
            }
        }
    }
}
"""


def _okhttp_classpath() -> str:
    configured = os.environ.get("TLSPIN_OKHTTP_CLASSPATH")
    if configured:
        return configured
    jars = [Path("/usr/share/java") / f"{name}.jar" for name in ("okhttp", "okio")]
    if all(jar.is_file() for jar in jars):
        return ":".join(map(str, jars))
    message = "Debian's libokhttp-java is not installed (/usr/share/java/okhttp.jar, okio.jar)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so OkHttp must be available: {message}")
    pytest.skip(message)


def test_okhttp_java_expression_pins_real_client(world: World, tmp_path: Path) -> None:
    """The exported okhttp-java expression compiles with OkHttp 3 and refuses the forged server."""
    javac = require_tool("javac", "TLSPIN_JAVAC")
    java = require_tool("java", "TLSPIN_JAVA")
    classpath = _okhttp_classpath()
    policy = world.write(
        "ok.toml",
        f'[[rule]]\nhosts = ["localhost"]\n'
        f'pins = [{{ pin = "{world.inter_pin}", role = "intermediate", '
        f'note = "*/ tricky \\\\u002a/ note" }}, '
        f'{{ pin = "{world.backup_pin}", role = "backup" }}]\n',
    )
    result = invoke("export", str(policy), "--format", "okhttp-java", "--okhttp-version", "3")
    assert result.exit_code == 0, result.stderr
    source = tmp_path / "PinCheck.java"
    source.write_text(JAVA_PROGRAM.replace("%EXPRESSION%", result.stdout.strip()), encoding="utf-8")
    compiled = subprocess.run(
        [javac, "-encoding", "UTF-8", "-cp", classpath, "-d", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stderr
    run = subprocess.run(
        [
            java,
            "-cp",
            f"{classpath}:{tmp_path}",
            "PinCheck",
            str(world.both_pem),
            f"https://localhost:{world.server.port}/",
            f"https://localhost:{world.rogue_server.port}/",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "OK 200"
    assert lines[1].startswith("PINNING FAILED Certificate pinning failure!")
