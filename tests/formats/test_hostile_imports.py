"""Imports of hostile XML and plist files: DTDs refused in the parser, deep nesting refused.

The DTD filter searched the raw bytes for ``<!entity``, which a UTF-16 document hides: its
entities then expanded (15 MiB of input into about 800 MB) or named local files. Each attack
below has a twin: the same document without the DTD, in the same encoding, imports.
"""

from __future__ import annotations

import plistlib
import struct

import pytest

from cli.world import World, invoke
from tlspin.exceptions import PolicyError
from tlspin.formats import import_policy

from .conftest import pins

ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "utf-16-be"]


def _nsc(encoding: str, *, dtd: str = "", domain: str = "api.example.com") -> bytes:
    a, b = pins(2)
    declared = encoding.upper().replace("-LE", "").replace("-BE", "")
    text = (
        f'<?xml version="1.0" encoding="{declared}"?>\n{dtd}'
        f"<network-security-config><domain-config><domain>{domain}</domain><pin-set>"
        f'<pin digest="SHA-256">{a.b64}</pin><pin digest="SHA-256">{b.b64}</pin>'
        "</pin-set></domain-config></network-security-config>\n"
    )
    data = text.encode(encoding)
    # Without a BOM, expat needs one to tell UTF-16 apart: give the LE/BE forms theirs.
    return {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(encoding, b"") + data


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(
    ("dtd", "domain"),
    [
        ('<!DOCTYPE network-security-config [<!ENTITY h "api.example.com">]>\n', "&h;"),
        ('<!DOCTYPE network-security-config [<!ENTITY x SYSTEM "file:///etc/hostname">]>\n',
         "&x;"),
        (
            '<!DOCTYPE network-security-config [<!ENTITY a "' + "A" * 1000 + '">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n',
            "&b;",
        ),
        ('<!DOCTYPE network-security-config SYSTEM "http://127.0.0.1:9/nsc.dtd">\n',
         "api.example.com"),
    ],
    ids=["entity", "external-entity", "expansion", "external-dtd"],
)
def test_a_dtd_is_refused_in_every_encoding(encoding: str, dtd: str, domain: str) -> None:
    """Entities, external entities and DTDs are refused whatever the encoding; twin: the same
    document without its DTD imports, in that encoding."""
    with pytest.raises(PolicyError, match="entity or DOCTYPE declarations are not accepted"):
        import_policy(_nsc(encoding, dtd=dtd, domain=domain), "android-nsc")
    imported = import_policy(_nsc(encoding), "android-nsc").policy
    assert [h.text for h in imported.rules[0].hosts] == ["api.example.com"]


def test_a_plist_with_an_internal_dtd_subset_is_refused_in_utf16() -> None:
    """A plist may carry its standard DOCTYPE (twin), but no internal subset or entity, in
    UTF-16 as in UTF-8."""
    a, b = pins(2)
    plain = plistlib.dumps({"TSKPinnedDomains": {"api.example.com": {
        "TSKPublicKeyHashes": [a.b64, b.b64], "TSKDisableDefaultReportUri": True}}}).decode()
    assert "<!DOCTYPE plist PUBLIC" in plain
    hostile = plain.replace(
        '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
        '"http://www.apple.com/DTDs/PropertyList-1.0.dtd" [<!ENTITY h "api.example.com">]>',
    ).replace("<key>api.example.com</key>", "<key>&h;</key>")
    assert hostile != plain
    for text, encoding in ((hostile, "utf-8"), (hostile, "utf-16")):
        data = text.replace('encoding="UTF-8"', f'encoding="{encoding.upper()}"').encode(encoding)
        with pytest.raises(PolicyError, match="entity or DOCTYPE"):
            import_policy(data, "trustkit-ios")
    twin = plain.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert import_policy(twin, "trustkit-ios").policy.rules[0].pins == (a, b)


def _deep_nsc(depth: int) -> bytes:
    a, b = pins(2)
    head = (
        "<network-security-config><domain-config><domain>example.com</domain><pin-set>"
        f'<pin digest="SHA-256">{a.b64}</pin><pin digest="SHA-256">{b.b64}</pin></pin-set>'
    )
    nested = "".join(f"<domain-config><domain>d{i}.example.com</domain>" for i in range(depth))
    tail = "</domain-config>" * (depth + 1) + "</network-security-config>"
    return (head + nested + tail).encode()


def test_deeply_nested_domain_configs_are_refused_clearly(world: World) -> None:
    """5000 nested <domain-config> gave a bare RecursionError (the CLI: "unexpected
    RecursionError"); now a PolicyError saying how deep is allowed, and exit 2 with one line.
    Twin: nesting a few levels deep imports, each level inheriting the pins."""
    with pytest.raises(PolicyError, match="nested more than 64 deep"):
        import_policy(_deep_nsc(5000), "android-nsc")
    path = world.write("deep.xml", _deep_nsc(5000))
    result = invoke("import", str(path), "--from", "android-nsc")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: android-nsc: elements are nested more than 64 deep")
    assert "unexpected" not in result.stderr
    policy = import_policy(_deep_nsc(5), "android-nsc").policy
    assert len(policy.rules) == 6
    assert len({r.pins for r in policy.rules}) == 1


def _binary_plist_of_nested_arrays(depth: int) -> bytes:
    """A binary plist whose top object is *depth* arrays, each holding the next."""
    objects = [b"\xa1" + struct.pack(">I", i + 1) for i in range(depth)] + [b"\xa0"]
    body, offsets = b"bplist00", []
    for obj in objects:
        offsets.append(len(body))
        body += obj
    table = len(body)
    body += b"".join(struct.pack(">I", offset) for offset in offsets)
    return body + b"\0" * 6 + bytes([4, 4]) + struct.pack(">QQQ", len(objects), 0, table)


def test_a_deeply_nested_binary_plist_is_refused_clearly() -> None:
    """plistlib reads binary containers recursively: 100000 nested arrays gave a bare
    RecursionError; now a PolicyError. Twin: a shallow one is read (and found to pin nothing)."""
    with pytest.raises(PolicyError, match="nested too deeply"):
        import_policy(_binary_plist_of_nested_arrays(100_000), "trustkit-ios")
    with pytest.raises(PolicyError, match="top level must be a dict"):
        import_policy(_binary_plist_of_nested_arrays(3), "trustkit-ios")
