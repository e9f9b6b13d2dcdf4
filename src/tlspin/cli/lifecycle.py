"""``tlspin init`` (a starter policy from live hosts) and ``tlspin backup-key``.

Exit codes: 0 done, 2 bad input or usage, 3 connection or TLS error (``init``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from tlspin.cli._common import fail, guarded, info, read_input, warn, write_output

if TYPE_CHECKING:
    from tlspin.policy import PinInfo, PinRule, Role

DEFAULT_EXPIRES_DAYS = 180


@click.command("init")
@click.argument("targets", nargs=-1, required=True, metavar="HOST[:PORT]...")
@click.option("--cafile", type=click.Path(dir_okay=False), help="Trusted CA certificates (PEM).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=443,
    show_default=True,
    help="Port for hosts given without one.",
)
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False), help="Write the policy here (else stdout)."
)
@click.option(
    "--expires-days",
    type=click.IntRange(1, 3650),
    default=DEFAULT_EXPIRES_DAYS,
    show_default=True,
    help="Set each rule's expires this many days ahead.",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds per connection."
)
@guarded
def init(
    *,
    targets: tuple[str, ...],
    cafile: str | None,
    port: int,
    out: str | None,
    expires_days: int,
    force: bool,
    timeout: float,
) -> None:
    """Connect to each host and write a starter policy.

    Each rule pins the leaf key and the issuing CA's key, with roles, subjects and expiry
    recorded, and expires --expires-days ahead. A port other than 443 is kept in the rule's
    ports, where lint --live, check and monitor look for it. Add a backup pin before shipping
    it (tlspin backup-key --add-to POLICY).
    """
    from tlspin._shared.policyio import dumps
    from tlspin.cli._certfiles import cert_info
    from tlspin.cli.inspect import connect
    from tlspin.hosts import canonical_host
    from tlspin.pins import Pin
    from tlspin.policy import PinInfo, PinPolicy

    if out is not None and Path(out).exists() and not force:
        fail(f"{out} exists; pass --force to replace it")
    today = dt.datetime.now(dt.UTC).date()
    expires = today + dt.timedelta(days=expires_days)
    per_host: dict[str, dict[Pin, PinInfo]] = {}
    ports: dict[str, list[int]] = {}
    for text in targets:
        target, result = connect(text, cafile=cafile, port=port, timeout=timeout)
        host = canonical_host(target.host)
        chain = result.verified_chain
        pins = per_host.setdefault(host, {})
        ports.setdefault(host, []).append(target.port)
        for depth, der in enumerate(chain[:2]):
            cert = cert_info(der, index=depth)
            role: Role = "leaf" if depth == 0 else "root" if cert.self_signed else "intermediate"
            pins.setdefault(
                Pin.from_certificate(der),
                PinInfo(role=role, note=cert.subject, not_after=cert.not_after.date()),
            )
        info(f"{target}: pinned the {'leaf and issuing CA' if len(chain) > 1 else 'leaf'} keys")
    # The rule keeps a port other than 443, so that lint --live, check and monitor find the
    # server where init did.
    rules = [
        _rule(
            [host],
            list(pins),
            expires=expires,
            pin_info=pins,
            ports=[] if set(ports[host]) == {443} else sorted(set(ports[host])),
        )
        for host, pins in per_host.items()
    ]
    comments = {
        i: (
            f"Starter rule for {hosts}: leaf key + issuing CA key.\n"
            "TODO: add a backup pin for a key kept offline before shipping this:\n"
            f"  tlspin backup-key --host {hosts} --out DIR --add-to {out or 'POLICY'}"
        )
        for i, hosts in enumerate(per_host)
    }
    policy = PinPolicy(rules)
    fmt: Literal["toml", "json"] = "json" if out and out.lower().endswith(".json") else "toml"
    text = dumps(
        policy,
        format=fmt,
        header=f"tlspin policy created by 'tlspin init' on {today}",
        rule_comments=comments,
    )
    write_output(out, text, overwrite=force)
    warn(
        "the starter policy has no backup pin yet; add one with: tlspin backup-key --add-to POLICY"
    )


def _rule(hosts: list[str], pins: list[Any], **options: Any) -> PinRule:
    import warnings

    from tlspin.exceptions import SinglePinWarning
    from tlspin.policy import PinRule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        return PinRule(hosts, pins, **options)


def _passphrase(passphrase_file: str | None, passphrase_env: str | None, ask: bool) -> bytes | None:
    given = [x for x in (passphrase_file, passphrase_env, ask or None) if x]
    if len(given) > 1:
        fail("give at most one of --passphrase-file, --passphrase-env and --ask-passphrase")
    secret: bytes | None = None
    if passphrase_file is not None:
        secret = read_input(passphrase_file, what="passphrase file").rstrip(b"\r\n")
    elif passphrase_env is not None:
        value = os.environ.get(passphrase_env)
        if value is None:
            fail(f"the environment variable {passphrase_env} is not set")
        secret = value.encode()
    elif ask:
        secret = click.prompt(
            "Passphrase for the backup key", hide_input=True, confirmation_prompt=True
        ).encode()
    if secret is not None and not secret:
        fail("the passphrase is empty; give a non-empty one or none at all")
    return secret


def _stem(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", host.replace("*", "wildcard")).strip(".") or "host"


@click.command("backup-key")
@click.option(
    "--host", "hosts", multiple=True, required=True, help="Host name for the CSR (repeatable)."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory for the key and CSR (created if missing).",
)
@click.option(
    "--key-type",
    type=click.Choice(["ec", "rsa"]),
    default="ec",
    show_default=True,
    help="EC P-256 or RSA.",
)
@click.option(
    "--rsa-bits", type=click.Choice(["2048", "3072", "4096"]), default="3072", show_default=True
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="Encrypt the key with this file's passphrase.",
)
@click.option(
    "--passphrase-env", metavar="VAR", help="Encrypt the key with the passphrase in $VAR."
)
@click.option("--ask-passphrase", is_flag=True, help="Prompt for a passphrase to encrypt the key.")
@click.option(
    "--add-to",
    "add_to",
    type=click.Path(dir_okay=False),
    help="Append the pin to this policy (role = backup).",
)
@guarded
def backup_key(
    *,
    hosts: tuple[str, ...],
    out_dir: str,
    key_type: str,
    rsa_bits: str,
    passphrase_file: str | None,
    passphrase_env: str | None,
    ask_passphrase: bool,
    add_to: str | None,
) -> None:
    """Create a backup key pair and a CSR for a host, and print its pin.

    The private key is written with mode 0600 (encrypted if a passphrase is given) and never
    printed. Keep it offline; it is needed only on the day you rotate to it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    from tlspin._shared.policyio import atomic_write
    from tlspin.hosts import canonical_host
    from tlspin.pins import Pin

    names = [canonical_host(h) for h in hosts]
    secret = _passphrase(passphrase_file, passphrase_env, ask_passphrase)
    updated: tuple[Path, Any] | None = None
    if add_to is not None:
        updated = _plan_policy_update(Path(add_to), names[0])
    directory = Path(out_dir)
    today = dt.datetime.now(dt.UTC).date()
    stem = f"{_stem(names[0])}.backup-{today:%Y%m%d}"
    key_path, csr_path = directory / f"{stem}.key", directory / f"{stem}.csr"
    for path in (key_path, csr_path):
        if path.exists():
            fail(f"{path} exists; refusing to overwrite a key or CSR")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create {directory}: {exc.strerror or exc}")

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(rsa_bits))
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            import ipaddress

            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName(general), critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    pin = Pin.from_csr(csr)
    if pin != Pin.from_private_key(key):  # Defensive: both come from the same key.
        fail("internal error: the CSR's pin differs from the key's pin")
    try:
        atomic_write(key_path, key_pem, mode=0o600)
        atomic_write(csr_path, csr.public_bytes(serialization.Encoding.PEM), mode=0o644)
    except OSError as exc:
        fail(f"cannot write to {directory}: {exc.strerror or exc}")
    del key, key_pem
    click.echo(str(pin))
    info(f"private key: {key_path} (mode 0600, {'encrypted' if secret else 'NOT encrypted'})")
    info(f"CSR:         {csr_path}")
    info(
        "Move the private key offline now (for example an encrypted USB drive in a safe) and "
        "delete it from this machine; it is needed only when you rotate to it."
    )
    if not secret:
        warn(
            "the private key is not encrypted; use --passphrase-file, --passphrase-env or "
            "--ask-passphrase to encrypt it"
        )
    if updated is not None:
        path, plan = updated
        plan(pin, key_path.name, today)
        info(f'added the pin to {path} with role = "backup"')


def _plan_policy_update(path: Path, host: str) -> tuple[Path, Any]:
    """Check now that *path* can take the pin; return a function that writes it later."""
    from tlspin._shared.policyio import dump
    from tlspin.cli._common import load_policy
    from tlspin.policy import PinInfo

    policy = load_policy(path)
    targets = [i for i, r in enumerate(policy.rules) if any(h.base == host for h in r.hosts)]
    if not targets:
        matching = [policy.rules.index(r) for r in policy.rules_for(host)]
        if len(matching) != 1:
            fail(
                f"{path}: {'no rule covers' if not matching else 'several rules cover'} {host}; "
                "add the pin by hand"
            )
        targets = matching
    text = path.read_text(encoding="utf-8", errors="replace")
    if any(line.lstrip().startswith("#") for line in text.splitlines()):
        warn(f"{path} is rewritten and its comments are not kept")
    if not os.access(path, os.W_OK):
        fail(f"{path}: the policy file is not writable")

    def write(pin: Any, key_name: str, today: dt.date) -> None:
        meta = PinInfo(role="backup", note=f"offline backup key {key_name}, created {today}")
        rules = list(policy.rules)
        for index in targets:
            rules[index] = _with_pin(rules[index], pin, meta)
        dump(policy.with_rules(rules), path)

    return path, write


def _with_pin(rule: PinRule, pin: Any, meta: PinInfo) -> PinRule:
    info_items = dict(rule.pin_info)
    info_items[pin] = meta
    return _rule(
        [h.text for h in rule.hosts],
        [*rule.pins, pin] if pin not in rule.pins else list(rule.pins),
        include_subdomains=rule.include_subdomains,
        expires=rule.expires,
        mode=rule.mode,
        deny=rule.deny,
        report_uri=rule.report_uri,
        pin_info=info_items,
        ports=rule.ports,
    )
