#!/usr/bin/env bash
# Build the tlspin Java client with javac --release 8 (what Android apps can use) against Debian's
# jars, and run its JUnit tests (the conformance vectors among them).
#
#   clients/java/build.sh                 compile, then run the tests
#   clients/java/build.sh --compile-only  compile (tests too), no test run
#   clients/java/build.sh --kotlin        also compile the README's Kotlin example (kotlinc)
#   clients/java/build.sh --classpath     print the classpath of the built classes, nothing else
#
# Output goes to $TLSPIN_JAVA_BUILD (default clients/java/build, ignored by git). Compiled
# output is reused while the sources, this script and the jars are unchanged (content hash), so
# the suite pays for javac and kotlinc once. A missing JDK, jar or kotlinc is an error, not a skip.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD="${TLSPIN_JAVA_BUILD:-$HERE/build}"
JARS="${TLSPIN_JAVA_JARS:-/usr/share/java}"

run_tests=1
kotlin=0
print_cp=0
for arg in "$@"; do
    case "$arg" in
        --compile-only) run_tests=0 ;;
        --kotlin) kotlin=1 ;;
        --classpath) run_tests=0; print_cp=1 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

die() { echo "build.sh: $*" >&2; exit 1; }
say() { [[ $print_cp == 1 ]] || echo "build.sh: $*" >&2; }

for tool in javac java jar; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install default-jdk-headless)"
done
dep() {
    local name="$1" package="$2"
    [[ -f "$JARS/$name.jar" ]] || die "$JARS/$name.jar is missing (install $package)"
    printf '%s' "$JARS/$name.jar"
}
MAIN_DEPS="$(dep okhttp libokhttp-java):$(dep okio libokio-java):$(dep bcprov libbcprov-java)"
TEST_DEPS="$MAIN_DEPS:$(dep junit4 junit4):$(dep hamcrest-core libhamcrest-java)"

# Android lacks these Java 8 APIs below API 24-26: the library must not use them (DirectorySync and
# NoFollowFiles alone touch java.nio.file, in classes loaded only when called, with a java.io
# fallback where it is missing).
forbidden="$(grep -rlE '^import java\.(time|util\.(Base64|function|stream))|^import java\.nio\.file' --exclude=DirectorySync.java --exclude=NoFollowFiles.java \
    "$HERE/src/main/java" || true)"
[[ -z "$forbidden" ]] || die "APIs Android lacks (java.time, java.util.Base64/function/stream, java.nio.file) in: $forbidden"

hash_inputs() {
    # Relative paths: the key must not depend on how the script was invoked.
    (cd "$HERE" && find src README.md build.sh -type f | LC_ALL=C sort | xargs sha256sum)
    sha256sum "$JARS"/{okhttp,okio,bcprov,junit4,hamcrest-core}.jar
    javac -version 2>&1
}
key="$(hash_inputs | sha256sum | cut -c1-16)"
out="$BUILD/$key"
CLASSPATH_OUT="$out/tlspin-bundles.jar:$out/test-classes:$TEST_DEPS"

if [[ ! -f "$out/compiled" ]]; then
    say "compiling (javac --release 8) into $out"
    rm -rf "$out" && mkdir -p "$out/classes" "$out/test-classes"
    javac --release 8 -encoding UTF-8 -Xlint:all,-options,-path -Werror -d "$out/classes" -cp "$MAIN_DEPS" \
        $(find "$HERE/src/main/java" -name '*.java' | LC_ALL=C sort) >&2
    jar cf "$out/tlspin-bundles.jar" -C "$out/classes" . >&2
    javac --release 8 -encoding UTF-8 -Xlint:all,-options,-path -d "$out/test-classes" \
        -cp "$out/tlspin-bundles.jar:$TEST_DEPS" \
        $(find "$HERE/src/test/java" -name '*.java' | LC_ALL=C sort) >&2
    touch "$out/compiled"
    # Older builds are of no use once the sources changed.
    find "$BUILD" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} + 2>/dev/null || true
fi
ln -sfn "$key" "$BUILD/current"

if [[ $kotlin == 1 && ! -f "$out/kotlin/compiled" ]]; then
    command -v kotlinc >/dev/null 2>&1 || die "kotlinc not found (install kotlin)"
    say "compiling the README's Kotlin example (kotlinc)"
    mkdir -p "$out/kotlin/src"
    # The example is the ```kotlin block that follows <!-- kotlin-example --> in README.md.
    awk '/<!-- kotlin-example -->/{on=1; next} on && /^```kotlin/{code=1; next} code && /^```/{exit} code' \
        "$HERE/README.md" >"$out/kotlin/src/PinnedHttp.kt"
    [[ -s "$out/kotlin/src/PinnedHttp.kt" ]] || die "README.md has no kotlin block after <!-- kotlin-example -->"
    cp "$HERE"/src/test/kotlin/*.kt "$out/kotlin/src/"
    kotlinc -nowarn -jvm-target 1.8 -cp "$out/tlspin-bundles.jar:$MAIN_DEPS" -d "$out/kotlin/example.jar" \
        "$out/kotlin/src"/*.kt 2>&1 | grep -v -e '^OpenJDK 64-Bit Server VM warning' >&2 || true
    [[ -f "$out/kotlin/example.jar" ]] || die "kotlinc failed"
    touch "$out/kotlin/compiled"
fi

if [[ $print_cp == 1 ]]; then
    cp="$CLASSPATH_OUT"
    [[ $kotlin == 1 ]] && cp="$cp:$out/kotlin/example.jar:$JARS/kotlin-stdlib.jar"
    printf '%s\n' "$cp"
fi

if [[ $run_tests == 1 ]]; then
    tests="$(cd "$out/test-classes" && find . -name '*Test.class' ! -name '*$*' | sed -e 's|^\./||' -e 's|\.class$||' -e 's|/|.|g' | LC_ALL=C sort)"
    say "running $(wc -w <<<"$tests") JUnit test classes"
    TLSPIN_VECTORS="$REPO/tests/vectors/bundles" java -cp "$CLASSPATH_OUT" org.junit.runner.JUnitCore $tests
fi
