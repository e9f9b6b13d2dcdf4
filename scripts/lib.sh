# Shared shell functions for scripts/demo, scripts/test and scripts/bench.
# Source it from bash after `set -euo pipefail`; it sets REPO_ROOT and cds there.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 1

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

# ---------------------------------------------------------------- output

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# section NAME: close the running section (printing its time), open a new one.
# section "" only closes the running one.
_SECTION_NAME=""
_SECTION_START=""
_now() { date +%s.%N; }
_elapsed() { awk -v a="$1" -v b="$(_now)" 'BEGIN { printf "%.1f", b - a }'; }
section() {
    if [[ -n "$_SECTION_NAME" ]]; then
        printf '   (%s: %ss)\n' "$_SECTION_NAME" "$(_elapsed "$_SECTION_START")"
        SECTION_TIMES+=("$_SECTION_NAME: $(_elapsed "$_SECTION_START")s")
    fi
    _SECTION_NAME="$1"
    _SECTION_START="$(_now)"
    if [[ -n "$1" ]]; then
        printf '== %s ==\n' "$1"
    fi
}
SECTION_TIMES=()

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (not root, and no sudo found)"
    fi
}

# ---------------------------------------------------------------- python

# find_python X.Y: print the path of a working Python X.Y interpreter.
# Tries PATH first (python3, pythonX.Y), then pyenv's and Debian's usual places.
find_python() {
    local want="$1" cand
    local -a cands=(python3 "python$want")
    for cand in /root/.pyenv/versions/"$want".*/bin/"python$want" \
                "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/"python$want" \
                /usr/bin/"python$want" /usr/local/bin/"python$want"; do
        [[ -x "$cand" ]] && cands+=("$cand")
    done
    for cand in "${cands[@]}"; do
        if "$cand" -c "import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" \
                >/dev/null 2>&1; then
            # Resolve pyenv shims to the real interpreter, so a venv never points at a shim.
            "$cand" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

# pip_q PYTHON ARGS...: `PYTHON -m pip ARGS` with its output on stderr, less the warnings
# this machine's pip configuration prints for absent local wheel folders.
pip_q() {
    local py="$1"
    shift
    "$py" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file://.*' is ignored" || true; } >&2
    return "${PIPESTATUS[0]}"
}

_lock_path() {
    # One lock per venv, outside the work tree so git status stays clean.
    local key
    key="$(printf '%s' "$1" | sha256sum | cut -c1-16)"
    printf '/tmp/tlspin-venv-%s.lock' "$key"
}

# ensure_venv DIR X.Y EXTRA [ALSO_GOOD_EXTRA...]
# Creates DIR with Python X.Y if missing (or if it has another Python / is broken), then
# `pip install -e .[EXTRA]` unless a stamp shows that pyproject.toml has not changed since
# the last install of EXTRA (or of one of ALSO_GOOD_EXTRA, which must be supersets of EXTRA).
ensure_venv() {
    local venv="$1" want="$2" extra="$3"
    shift 3
    local lock
    lock="$(_lock_path "$REPO_ROOT/$venv")"
    (
        # Serialise with any other script filling the same venv right now.
        flock -w 900 9 || die "timed out waiting for the lock on $venv ($lock)"
        _ensure_venv_locked "$venv" "$want" "$extra" "$@"
    ) 9>"$lock"
}

_stamp_value() {
    # What the install depended on: the project file, where the checkout is, and the extra.
    { cat "$REPO_ROOT/pyproject.toml"; printf '\n%s\n%s\n' "$REPO_ROOT" "$1"; } | sha256sum | cut -d' ' -f1
}

_ensure_venv_locked() {
    local venv="$1" want="$2" extra="$3"
    shift 3
    local py="$venv/bin/python" fresh=0 e
    if [[ -e "$venv" ]] && ! "$py" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" \
            >/dev/null 2>&1; then
        log "$venv is not a working Python $want venv; recreating it"
        rm -rf "$venv"
    fi
    if [[ ! -x "$py" ]]; then
        local base
        base="$(find_python "$want")" || die "Python $want not found (looked on PATH and under ~/.pyenv/versions)"
        log "creating $venv with $base"
        "$base" -m venv "$venv"
        pip_q "$py" install --quiet --upgrade pip
        fresh=1
    fi
    for e in "$extra" "$@"; do
        if [[ $fresh -eq 0 && -f "$venv/.tlspin-stamp-$e" \
              && "$(cat "$venv/.tlspin-stamp-$e")" == "$(_stamp_value "$e")" ]]; then
            return 0
        fi
    done
    log "installing .[$extra] into $venv"
    rm -f "$venv"/.tlspin-stamp-*
    if ! pip_q "$py" install --quiet -e ".[$extra]"; then
        die "pip install -e '.[$extra]' into $venv failed"
    fi
    _stamp_value "$extra" >"$venv/.tlspin-stamp-$extra"
}

# ensure_mitm_venv DIR: a venv holding PyPI's mitmproxy (it needs a newer Python than 3.11).
# Prints the path of a working mitmdump; falls back to Debian's package.
MITMPROXY_SPEC="${TLSPIN_MITMPROXY_SPEC:-mitmproxy>=12.1,<13}"
ensure_mitm_venv() {
    local venv="$1" lock
    lock="$(_lock_path "$REPO_ROOT/$venv")"
    (
        flock -w 900 9 || die "timed out waiting for the lock on $venv ($lock)"
        _ensure_mitm_locked "$venv"
    ) 9>"$lock"
}

_ensure_mitm_locked() {
    local venv="$1" want base
    if [[ -f "$venv/.tlspin-stamp-mitmproxy" && "$(cat "$venv/.tlspin-stamp-mitmproxy")" == "$MITMPROXY_SPEC" ]] \
            && "$venv/bin/mitmdump" --version >/dev/null 2>&1; then
        printf '%s\n' "$REPO_ROOT/$venv/bin/mitmdump"
        return 0
    fi
    for want in 3.12 3.13; do
        base="$(find_python "$want")" || continue
        rm -rf "$venv"
        log "creating $venv with $base and installing $MITMPROXY_SPEC"
        if "$base" -m venv "$venv" \
                && pip_q "$venv/bin/python" install --quiet --upgrade pip \
                && pip_q "$venv/bin/python" install --quiet "$MITMPROXY_SPEC" \
                && "$venv/bin/mitmdump" --version >/dev/null 2>&1; then
            printf '%s\n' "$MITMPROXY_SPEC" >"$venv/.tlspin-stamp-mitmproxy"
            printf '%s\n' "$REPO_ROOT/$venv/bin/mitmdump"
            return 0
        fi
        log "mitmproxy from PyPI did not install on Python $want"
    done
    rm -rf "$venv"
    log "falling back to Debian's mitmproxy package"
    apt_install_missing mitmproxy >&2
    command -v mitmdump || die "no mitmdump: neither PyPI's nor Debian's mitmproxy installed"
}

# ---------------------------------------------------------------- apt

_APT_UPDATED=0
_apt() {
    # Wait for another apt/dpkg run (another session or helper) instead of failing.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

# apt_install_missing PKG...: install the Debian packages that dpkg does not report as installed.
apt_install_missing() {
    local p
    local -a missing=()
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "apt: installing ${missing[*]}"
    if [[ $_APT_UPDATED -eq 0 ]]; then
        _apt update -qq
        _APT_UPDATED=1
    fi
    _apt install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# okhttp_classpath: colon-joined jars for Debian's OkHttp 3 (Java; okio 1.x needs no Kotlin).
okhttp_classpath() {
    local jar cp=""
    for jar in okhttp okio; do
        [[ -f "/usr/share/java/$jar.jar" ]] || die "/usr/share/java/$jar.jar is missing (is libokhttp-java installed?)"
        cp="${cp:+$cp:}/usr/share/java/$jar.jar"
    done
    printf '%s\n' "$cp"
}

# ---------------------------------------------------------------- postgres

PG_DIR=""
PG_BIN=""
PG_USER=""

_pg_bindir() {
    local d
    d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n1)"
    if [[ -n "$d" && -x "$d/initdb" ]]; then
        printf '%s\n' "$d"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    else
        return 1
    fi
}

_as_pg() {
    # initdb and postgres refuse to run as root.
    if [[ $EUID -ne 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$PG_USER" -- "$@"
    else
        su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")"
    fi
}

free_port() {
    local py="$1"
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# pg_start PYTHON: start a throwaway cluster on 127.0.0.1 and export TLSPIN_TEST_PG_URL.
# Registers nothing itself: the caller's EXIT trap must call pg_stop.
pg_start() {
    local py="$1" port tries
    PG_BIN="$(_pg_bindir)" || die "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin"
    if [[ $EUID -eq 0 ]]; then
        PG_USER=postgres
        if ! id -u "$PG_USER" >/dev/null 2>&1; then
            PG_USER=tlspin-pg
            id -u "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
        fi
    else
        PG_USER="$(id -un)"
    fi
    PG_DIR="$(mktemp -d /tmp/tlspin-pg.XXXXXX)"
    mkdir -p "$PG_DIR/data" "$PG_DIR/sock"
    [[ $EUID -eq 0 ]] && chown -R "$PG_USER" "$PG_DIR"
    chmod 700 "$PG_DIR"
    (cd "$PG_DIR" && _as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U "$PG_USER" -A trust -E UTF8 \
        --locale=C --no-sync >"$PG_DIR/initdb.log" 2>&1) \
        || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    _pg_tls_files
    cat >>"$PG_DIR/data/postgresql.conf" <<EOF

# tlspin test cluster: loopback only, throwaway, so durability is off for speed.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
# TLS for the process-wide pinning proofs (asyncpg): a throwaway CA made by _pg_tls_files.
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
EOF
    # tlspin_tls takes TLS only; every other database (tlspin_test, tlspin_clear) also takes clear
    # text, so a client that falls back to clear text after a refused handshake gets through:
    # the asyncpg test proves that a pin refusal never becomes a clear-text connection.
    cat >"$PG_DIR/data/pg_hba.conf" <<EOF
local     all        all trust
hostssl   tlspin_tls all 127.0.0.1/32 trust
hostnossl tlspin_tls all 127.0.0.1/32 reject
host      all        all 127.0.0.1/32 trust
EOF
    for tries in 1 2 3 4 5; do
        port="$(free_port "$py")"
        if (cd "$PG_DIR" && _as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
                -w -t 60 -o "-p $port" start >/dev/null); then
            break
        fi
        # Most likely someone took the port between our probe and the bind: try another.
        log "PostgreSQL did not start on port $port (try $tries); server log:"
        tail -n 5 "$PG_DIR/server.log" >&2 || true
        port=""
    done
    [[ -n "$port" ]] || die "PostgreSQL did not start; see $PG_DIR/server.log"
    local db
    for db in tlspin_test tlspin_tls tlspin_clear; do
        (cd "$PG_DIR" && _as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER" "$db") \
            || die "createdb $db failed"
    done
    # The collector's tests keep clear text (as before TLS was turned on); the TLS proofs use
    # TLSPIN_TEST_PG_CAFILE (the CA) and TLSPIN_TEST_PG_CERT (the server's certificate).
    export TLSPIN_TEST_PG_URL="postgresql://$PG_USER@127.0.0.1:$port/tlspin_test?sslmode=disable"
    export TLSPIN_TEST_PG_HOST=127.0.0.1 TLSPIN_TEST_PG_PORT="$port" TLSPIN_TEST_PG_USER="$PG_USER"
    export TLSPIN_TEST_PG_CAFILE="$PG_DIR/tls/ca.pem" TLSPIN_TEST_PG_CERT="$PG_DIR/tls/server.crt"
}

# _pg_tls_files: a throwaway CA and a server certificate (localhost, 127.0.0.1) for the cluster.
# The key belongs to the cluster user, mode 0600 (PostgreSQL refuses a key others can read).
_pg_tls_files() {
    local t="$PG_DIR/tls"
    mkdir -p "$t"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj "/CN=tlspin test PostgreSQL CA" -keyout "$t/ca.key" -out "$t/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        >"$t/openssl.log" 2>&1 || { cat "$t/openssl.log" >&2; die "openssl: the PostgreSQL CA failed"; }
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$t/server.key" -out "$t/server.csr" >>"$t/openssl.log" 2>&1 \
        || { cat "$t/openssl.log" >&2; die "openssl: the PostgreSQL server key failed"; }
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$t/server.ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
        -days 7 -extfile "$t/server.ext" -out "$t/server.crt" >>"$t/openssl.log" 2>&1 \
        || { cat "$t/openssl.log" >&2; die "openssl: the PostgreSQL server certificate failed"; }
    install -m 0644 "$t/server.crt" "$PG_DIR/data/server.crt"
    install -m 0600 "$t/server.key" "$PG_DIR/data/server.key"
    rm -f "$t/ca.key" "$t/server.key" "$t/server.csr"
    if [[ $EUID -eq 0 ]]; then
        chown "$PG_USER" "$PG_DIR/data/server.crt" "$PG_DIR/data/server.key"
    fi
}

pg_stop() {
    [[ -n "$PG_DIR" && -d "$PG_DIR" ]] || return 0
    if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
        (cd "$PG_DIR" && _as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1) || true
    fi
    rm -rf "$PG_DIR"
    PG_DIR=""
}
