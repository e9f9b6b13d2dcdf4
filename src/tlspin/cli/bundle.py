"""``tlspin keygen`` and ``tlspin bundle sign|verify|show``: signed pin bundles.

Exit codes of ``tlspin bundle verify``: 0 valid, 1 signatures do not meet the threshold of the
trusted keys (or a key rotation is not properly signed), 2 usage error or unreadable file,
3 malformed bundle (size, JSON, duplicate keys, schema, invalid policy), 4 validly signed but not
acceptable now (expired, issued in the future, version not above ``--min-version``, or the policy
leaves ``--update-host`` unpinned). The other commands exit 0 on success, 1 when they refuse
(lint errors, a rotation the keys cannot sign), 2 on bad input.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tlspin.cli._common import EXIT_FAIL, EXIT_USAGE, fail, guarded, info, read_input, write_output
from tlspin.cli._text import clean, echo

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tlspin.bundles.format import Bundle, Document
    from tlspin.policy import PinPolicy

EXIT_MALFORMED = 3
EXIT_NOT_NOW = 4
_MALFORMED = {
    "size",
    "encoding",
    "json",
    "duplicate-key",
    "number",
    "schema",
    "format",
    "policy",
    "chain",
}
_NOT_NOW = {"expired", "future", "rollback", "equivocation", "unpinned-update-host"}


def _pub_path(out: str) -> Path:
    path = Path(out)
    return path.with_suffix(".pub") if path.suffix not in ("", ".pub") else Path(f"{out}.pub")


def _passphrase(ask: bool, env: str | None, *, confirm: bool) -> bytes | None:
    if env is not None:
        value = os.environ.get(env)
        if not value:
            fail(f"--passphrase-env {env}: the environment variable is not set or empty")
        return value.encode("utf-8")
    if ask:
        value = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
        if not value:
            fail("expected a non-empty passphrase")
        return str(value).encode("utf-8")
    return None


@click.command("keygen")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Private key file to create (PKCS#8 PEM, mode 0600).",
)
@click.option("--passphrase", "ask", is_flag=True, help="Encrypt the key; prompt for a passphrase.")
@click.option(
    "--passphrase-env", metavar="VAR", help="Encrypt with the passphrase in this variable."
)
@click.option("--force", is_flag=True, help="Replace existing key files.")
@guarded
def keygen(out: str, ask: bool, passphrase_env: str | None, force: bool) -> None:
    """Make an Ed25519 bundle-signing key.

    Writes the private key to OUT (mode 0600) and the public key to OUT with the suffix .pub,
    and prints the public key and its key id. The private key is never printed.
    """
    from tlspin.bundles.keys import PublicKey, generate_private_key, write_private_key

    pub_path = _pub_path(out)
    for path in (Path(out), pub_path):
        if path.exists() and not force:
            fail(f"{path} exists; pass --force to replace it")
    passphrase = _passphrase(ask, passphrase_env, confirm=True)
    key = generate_private_key()
    write_private_key(out, key, passphrase=passphrase, overwrite=force)
    public = PublicKey.from_key(key)
    write_output(str(pub_path), f"{public.b64}\n", mode=0o644)
    click.echo(f"public key: {public.b64}")
    click.echo(f"key id:     {public.keyid}")
    info(
        f"wrote the private key to {out} (mode 0600"
        f"{', encrypted' if passphrase else ', NOT encrypted'}) and the public key to {pub_path}"
    )


@click.group("bundle")
def bundle() -> None:
    """Sign, verify and inspect signed pin bundles (docs/bundle-format.md)."""


def _load_keys(paths: Sequence[str], env: str | None) -> list[Ed25519PrivateKey]:
    from tlspin.bundles.errors import BundleError
    from tlspin.bundles.keys import load_private_key

    passphrase = _passphrase(False, env, confirm=False) if env else None
    keys = []
    for path in paths:
        try:
            keys.append(load_private_key(path, passphrase=passphrase))
        except BundleError as exc:
            if passphrase is None and "encrypted" in str(exc) and sys.stdin.isatty():
                secret = click.prompt(f"Passphrase for {path}", hide_input=True, err=True)
                keys.append(load_private_key(path, passphrase=str(secret).encode("utf-8")))
            else:
                fail(str(exc) + ("; use --passphrase-env" if "encrypted" in str(exc) else ""))
    return keys


def _lint_errors(policy_file: str, policy: PinPolicy) -> list[str] | None:
    """Error findings of the linter; None when the linter is not installed."""
    try:
        from tlspin import lint
    except ImportError:
        return None
    findings: Sequence[Any]
    if hasattr(lint, "lint_policy"):
        findings = lint.lint_policy(policy)
    else:
        text = read_input(policy_file, what="policy file").decode("utf-8", "replace")
        as_json = Path(policy_file).suffix.lower() == ".json"
        findings = lint.lint_text(text, format="json" if as_json else "toml").findings
    return [f"{f.code}: {f.message}" for f in findings if f.severity == "error"]


def _read_bundle_bytes(path: str) -> bytes:
    """Read at most one byte past the bundle size cap: a larger file is malformed data (exit 3,
    reason ``size``), not a usage error, and is never read whole."""
    from tlspin.bundles.format import DEFAULT_MAX_BYTES

    if path == "-":
        return sys.stdin.buffer.read(DEFAULT_MAX_BYTES + 1)
    p = Path(path)
    try:
        if p.is_dir():
            fail(f"{path}: expected a bundle, found a directory")
        with p.open("rb") as handle:
            return handle.read(DEFAULT_MAX_BYTES + 1)
    except FileNotFoundError:
        fail(f"{path}: no such bundle")
    except OSError as exc:
        fail(f"{path}: cannot read the bundle: {exc.strerror or exc}")


def _read_document(path: str) -> Document:
    from tlspin.bundles.errors import BundleError
    from tlspin.bundles.format import parse_document

    data = _read_bundle_bytes(path)
    try:
        return parse_document(data)
    except BundleError as exc:
        fail(f"{path}: REFUSED ({exc.reason}): {exc}", code=EXIT_MALFORMED)


def _expiry(value: str, issued: dt.datetime) -> dt.datetime:
    from tlspin.bundles.errors import BundleError
    from tlspin.bundles.format import parse_time
    from tlspin.bundles.sign import parse_duration

    try:
        return issued + parse_duration(value)
    except ValueError:
        pass
    try:
        return parse_time(value, "--expires")
    except BundleError:
        fail(
            f"--expires: expected a lifetime like 30d, 12h or 2w, or a UTC time like "
            f"2030-01-31T00:00:00Z; found {value!r}"
        )


@bundle.command("sign")
@click.argument("policy_file", metavar="POLICY", type=click.Path(dir_okay=False))
@click.option(
    "--key",
    "-k",
    "key_files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Private key to sign with (repeat for several signatures).",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(1, 2**53 - 1),
    help="Bundle version; must exceed every version published before. "
    "Default with --previous: its version + 1.",
)
@click.option(
    "--expires",
    default="30d",
    show_default=True,
    help="Lifetime (30d, 12h, 2w) or a UTC time (2030-01-31T00:00:00Z).",
)
@click.option(
    "--previous",
    type=click.Path(dir_okay=False),
    help="The bundle this one replaces: carries its key-rotation chain forward.",
)
@click.option(
    "--next-key",
    "next_keys",
    multiple=True,
    help="Hand signing over to this public key (rotation; repeat). --key must include "
    "enough of the new keys to meet --next-threshold.",
)
@click.option(
    "--next-threshold",
    type=click.IntRange(1, 16),
    default=None,
    help="Signatures required from the next keys (default 1).",
)
@click.option(
    "--passphrase-env", metavar="VAR", help="Passphrase of encrypted keys, from this variable."
)
@click.option("--force", is_flag=True, help="Sign despite lint errors or a key-set mismatch.")
@click.option("--out", "-o", required=True, help="Bundle file to write ('-' for stdout).")
@guarded
def sign(
    *,
    policy_file: str,
    key_files: tuple[str, ...],
    version: int | None,
    expires: str,
    previous: str | None,
    next_keys: tuple[str, ...],
    next_threshold: int | None,
    passphrase_env: str | None,
    force: bool,
    out: str,
) -> None:
    """Sign POLICY into a bundle.

    Refuses a policy with lint errors unless --force. To rotate or retire signing keys, give
    the new set with --next-key (signed by the current keys and by the new ones).
    """
    from tlspin.bundles.errors import BundleError
    from tlspin.bundles.keys import KeySet, PublicKey
    from tlspin.bundles.sign import declared_keys, next_chain, sign_bundle
    from tlspin.cli._common import load_policy

    policy = load_policy(policy_file)
    errors = _lint_errors(policy_file, policy)
    if errors is None:
        info("the linter (tlspin.lint) is not installed: only the policy schema was checked")
    elif errors and not force:
        for line in errors:
            echo(f"lint error: {clean(line)}", err=True)
        fail(
            f"{policy_file}: {len(errors)} lint error(s); fix them or pass --force", code=EXIT_FAIL
        )
    keys = _load_keys(key_files, passphrase_env)
    chain: tuple[Bundle, ...] = ()
    if previous is not None:
        old = _read_document(previous)
        chain = next_chain(old)
        if version is None:
            version = old.bundle.version + 1
        if version <= old.bundle.version:
            fail(
                f"--version {version} must exceed the previous bundle's {old.bundle.version}",
                code=EXIT_FAIL,
            )
        expected = declared_keys(old)
        have = {PublicKey.from_key(k).keyid for k in keys}
        if expected is not None and len(have & expected.keyids) < expected.threshold and not force:
            fail(
                f"clients that accepted {previous} require {expected.threshold} signature(s) from "
                f"its signing keys; the given keys include {len(have & expected.keyids)} "
                "(pass --force to sign anyway)",
                code=EXIT_FAIL,
            )
    if version is None:
        fail("give --version (or --previous to continue from an earlier bundle)")
    signing_keys = None
    if next_keys:
        signing_keys = KeySet([PublicKey.load(k) for k in next_keys], next_threshold or 1)
    elif next_threshold is not None:
        fail("--next-threshold needs --next-key")
    issued = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        document = sign_bundle(
            policy,
            keys=keys,
            version=version,
            issued_at=issued,
            expires_at=_expiry(expires, issued),
            signing_keys=signing_keys,
            chain=chain,
        )
    except BundleError as exc:
        fail(str(exc), code=EXIT_FAIL if exc.reason in ("rotation", "chain") else EXIT_USAGE)
    write_output(out, document.dumps())
    b = document.bundle
    info(
        f"signed bundle version {b.version} ({len(policy.rules)} rule(s)), expires "
        f"{b.signed['expires_at']}, by {', '.join(s.keyid[:16] for s in b.signatures)}"
        + (f"; hands signing over to {len(signing_keys.keys)} key(s)" if signing_keys else "")
        + ("" if out == "-" else f"; wrote {out}")
    )


@bundle.command("verify")
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option(
    "--trusted-key",
    "-t",
    "trusted",
    multiple=True,
    required=True,
    help="A trusted public key: base64, or a .pub/PEM file (repeat).",
)
@click.option(
    "--threshold",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Valid signatures required from the trusted keys.",
)
@click.option(
    "--min-version",
    type=click.IntRange(0, 2**53 - 1),
    default=0,
    show_default=True,
    help="Refuse versions up to this one (the version a client already has).",
)
@click.option("--update-host", help="Also require the policy to pin this host (the update host).")
@guarded
def verify(
    *,
    bundle_file: str,
    trusted: tuple[str, ...],
    threshold: int,
    min_version: int,
    update_host: str | None,
) -> None:
    """Check BUNDLE as a client would: signatures, threshold, rotation chain, version, times.

    Exit codes: 0 valid; 1 signatures do not meet the threshold; 2 usage error; 3 malformed;
    4 validly signed but not acceptable now (expired, future, version, unpinned update host).
    """
    from tlspin.bundles.errors import BundleError
    from tlspin.bundles.keys import KeySet, PublicKey
    from tlspin.bundles.verify import TrustState, accept

    try:
        keys = KeySet([PublicKey.load(k) for k in trusted], threshold)
    except BundleError as exc:
        fail(f"--trusted-key/--threshold: {exc}")
    document = _read_document(bundle_file)
    try:
        verified = accept(
            document, trust=TrustState(keys), min_version=min_version, pinned_host=update_host
        )
    except BundleError as exc:
        code = (
            EXIT_MALFORMED
            if exc.reason in _MALFORMED
            else EXIT_NOT_NOW
            if exc.reason in _NOT_NOW
            else EXIT_FAIL
        )
        fail(f"{bundle_file}: REFUSED ({exc.reason}): {exc}", code=code)
    b = verified.bundle
    rotated = (
        f"; signing keys now {len(verified.trust.keys.keys)} key(s), threshold "
        f"{verified.trust.keys.threshold}"
        if verified.trust.version
        else ""
    )
    echo(
        f"OK: bundle version {b.version}, {len(verified.policy.rules)} rule(s), signed by "
        f"{', '.join(sorted(k[:16] for k in verified.signers))}, expires "
        f"{b.signed['expires_at']} ({_relative(b.expires_at)}){rotated}"
    )


def _relative(when: dt.datetime) -> str:
    from tlspin.bundles.summary import relative

    return relative(when)


@bundle.command("show")
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option(
    "--diff",
    "old_file",
    type=click.Path(dir_okay=False),
    help="An older bundle: also list what changed since it.",
)
@guarded
def show(bundle_file: str, old_file: str | None) -> None:
    """Summarise BUNDLE (signatures are NOT checked here; use 'tlspin bundle verify')."""
    from tlspin.bundles.summary import describe, diff

    document = _read_document(bundle_file)
    # A bundle is shown before anything in it is verified: every line quotes its hosts, pins
    # and notes, so each is shown literally (escape sequences, markup and newlines included).
    for line in describe(document):
        echo(clean(line))
    if old_file is not None:
        old = _read_document(old_file)
        echo("")
        for line in diff(old, document):
            echo(clean(line))
