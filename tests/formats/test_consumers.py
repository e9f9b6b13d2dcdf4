"""Exports checked by their real consumers on loopback: curl and OkHttp (Debian's jars, javac)."""

from __future__ import annotations

import datetime as dt
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


EXPIRY_PROGRAM = """\
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

public class ExpiryCheck {
    interface Pinner { CertificatePinner get(); }

    static class JavaCurrent {
%JAVA_CURRENT%
    }

    static class JavaPast {
%JAVA_PAST%
    }

    public static void main(String[] args) throws Exception {
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
        store.load(null, null);
        int n = 0;
        try (InputStream in = new FileInputStream(args[0])) {
            for (java.security.cert.Certificate cert : factory.generateCertificates(in)) {
                store.setCertificateEntry("ca" + n++, cert);
            }
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(
            TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(store);
        X509TrustManager trust = (X509TrustManager) tmf.getTrustManagers()[0];
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, new TrustManager[] {trust}, null);
        String[] names = {"java-current", "java-past", "kotlin-current", "kotlin-past"};
        Pinner[] pinners = {
            JavaCurrent::certificatePinner,
            JavaPast::certificatePinner,
            current.PinnerKt::certificatePinner,
            past.PinnerKt::certificatePinner,
        };
        for (int p = 0; p < pinners.length; p++) {
            OkHttpClient client = new OkHttpClient.Builder()
                .sslSocketFactory(tls.getSocketFactory(), trust)
                .certificatePinner(pinners[p].get())
                .build();
            for (int i = 1; i < args.length; i++) {
                Request request = new Request.Builder().url(args[i]).build();
                String outcome;
                try (Response response = client.newCall(request).execute()) {
                    outcome = "OK " + response.code();
                } catch (SSLPeerUnverifiedException e) {
                    outcome = "PINNING FAILED";
                } catch (IOException e) {
                    outcome = "IO ERROR " + e;
                }
                System.out.println(names[p] + " " + (i == 1 ? "real" : "forged") + " " + outcome);
            }
            client.connectionPool().evictAll();
        }
    }
}
"""


def test_okhttp_exports_carry_the_expiry(world: World, tmp_path: Path) -> None:
    """The Java and Kotlin exports of an expiring rule compile against Debian's OkHttp (javac,
    kotlinc) and, on loopback, enforce the pins before the expires date (the forged server is
    refused) and leave them out after it (an empty pinner: any CA-valid server passes)."""
    javac = require_tool("javac", "TLSPIN_JAVAC")
    java = require_tool("java", "TLSPIN_JAVA")
    kotlinc = require_tool("kotlinc", "TLSPIN_KOTLINC")
    classpath = _okhttp_classpath()
    today = dt.datetime.now(dt.UTC).date()
    pins = (
        f'pins = [{{ pin = "{world.inter_pin}", role = "intermediate" }}, '
        f'{{ pin = "{world.backup_pin}", role = "backup" }}]\n'
    )
    sources: dict[str, str] = {}
    for name, expires in (
        ("current", today + dt.timedelta(days=90)),
        ("past", today - dt.timedelta(days=1)),
    ):
        policy = world.write(
            f"{name}.toml", f'[[rule]]\nhosts = ["localhost"]\n{pins}expires = {expires}\n'
        )
        for fmt in ("okhttp-java", "okhttp-kotlin"):
            result = invoke("export", str(policy), "--format", fmt)
            assert result.exit_code == 0, result.stderr
            assert ("no longer applies its pins" in result.stderr) == (name == "past")
            sources[f"{fmt}-{name}"] = result.stdout
    kotlin_out = tmp_path / "kotlin"
    kotlin_files = []
    for name in ("current", "past"):
        path = tmp_path / name / "Pinner.kt"
        path.parent.mkdir()
        header = f"package {name}\n\nimport okhttp3.CertificatePinner\n\n"
        path.write_text(header + sources[f"okhttp-kotlin-{name}"], encoding="utf-8")
        kotlin_files.append(str(path))
    compiled = subprocess.run(
        [kotlinc, "-cp", classpath, "-d", str(kotlin_out), *kotlin_files],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert compiled.returncode == 0, compiled.stderr
    program = EXPIRY_PROGRAM.replace("%JAVA_CURRENT%", sources["okhttp-java-current"]).replace(
        "%JAVA_PAST%", sources["okhttp-java-past"]
    )
    source = tmp_path / "ExpiryCheck.java"
    source.write_text(program, encoding="utf-8")
    full = f"{classpath}:{kotlin_out}:{_kotlin_stdlib(kotlinc)}"
    compiled = subprocess.run(
        [javac, "-encoding", "UTF-8", "-cp", full, "-d", str(tmp_path), str(source)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert compiled.returncode == 0, compiled.stderr
    run = subprocess.run(
        [
            java, "-cp", f"{full}:{tmp_path}", "ExpiryCheck", str(world.both_pem),
            f"https://localhost:{world.server.port}/",
            f"https://localhost:{world.rogue_server.port}/",
        ],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "java-current real OK 200",
        "java-current forged PINNING FAILED",
        "java-past real OK 200",
        "java-past forged OK 200",
        "kotlin-current real OK 200",
        "kotlin-current forged PINNING FAILED",
        "kotlin-past real OK 200",
        "kotlin-past forged OK 200",
    ]


def _kotlin_stdlib(kotlinc: str) -> str:
    """The Kotlin standard library jar next to kotlinc's installation (Debian: /usr/share/java)."""
    configured = os.environ.get("TLSPIN_KOTLIN_STDLIB")
    if configured:
        return configured
    for candidate in (
        Path("/usr/share/java/kotlin-stdlib.jar"),
        Path(kotlinc).resolve().parent.parent / "lib" / "kotlin-stdlib.jar",
    ):
        if candidate.is_file():
            return str(candidate)
    pytest.fail(f"kotlin-stdlib.jar not found for {kotlinc} (set TLSPIN_KOTLIN_STDLIB)")
