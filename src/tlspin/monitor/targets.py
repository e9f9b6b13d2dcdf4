"""What the monitor probes: the concrete hosts of a policy plus an optional endpoints file.

Endpoints file (TOML)::

    policy_hosts = true          # optional: also probe every exact host of the policy (on
                                 # its rule's ports, else 443)

    [[endpoint]]
    host = "api.example.com"     # must fall under a rule of the policy
    port = 8443                  # optional, default 443
    ips = ["192.0.2.10", "2001:db8::10"]   # optional: probe each edge separately

A policy host named in the endpoints file is probed only as the file says (its ports and IPs);
the others are probed on their rule's ``ports`` (443 when it names none) through ordinary name
resolution. Without an endpoints file, that is all the monitor probes. Wildcard rules have no
concrete host, so their names are probed only when the file lists them.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlspin.exceptions import PolicyError
from tlspin.hosts import Kind, canonical_host
from tlspin.policy import PinPolicy

__all__ = ["Target", "load_targets", "policy_targets", "targets_from_data"]

_MAX_FILE_BYTES = 4 * 1024 * 1024
_TOP_KEYS = ("policy_hosts", "endpoint")
_ENDPOINT_KEYS = ("host", "port", "ips")


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint to probe.

    Attributes:
        host: canonical host name, sent as SNI and checked against the certificate.
        port: TCP port.
        ip: connect to this address instead of resolving *host* (one edge of a fleet).
    """

    host: str
    port: int = 443
    ip: str | None = None

    @property
    def endpoint(self) -> str:
        """The stable key ``host:port`` or ``host:port@ip`` that results are stored under."""
        base = f"{self.host}:{self.port}"
        return f"{base}@{self.ip}" if self.ip else base


def policy_targets(policy: PinPolicy, *, port: int = 443) -> list[Target]:
    """Return a target per exact (non-wildcard) host named in *policy*, in policy order.

    A host is probed on each of its rule's ``ports``, or on *port* when the rule names none.
    """
    seen: dict[Target, None] = {}
    for rule in policy.rules:
        for pattern in rule.hosts:
            if pattern.kind is Kind.EXACT:
                for each in rule.ports or (port,):
                    seen.setdefault(Target(pattern.base, each), None)
    return list(seen)


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PolicyError(f"{where}: 'port' must be an integer from 1 to 65535, found {value!r}")
    return value


def _ip(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{where}: an IP address must be a string, found {value!r}")
    try:
        return ipaddress.ip_address(value.strip().strip("[]")).compressed
    except ValueError:
        raise PolicyError(f"{where}: expected an IPv4 or IPv6 address, found {value!r}") from None


def targets_from_data(data: Mapping[str, Any], policy: PinPolicy) -> list[Target]:
    """Build the target list from parsed endpoints-file data and *policy*.

    Raises:
        PolicyError: the data does not follow the schema, or names a host no rule covers.
    """
    if not isinstance(data, Mapping):
        raise PolicyError(f"an endpoints file must be a table, found {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise PolicyError(f"unknown top-level key(s) {unknown}; expected {list(_TOP_KEYS)}")
    include_policy = data.get("policy_hosts", True)
    if not isinstance(include_policy, bool):
        raise PolicyError(f"'policy_hosts' must be true or false, found {include_policy!r}")
    raw = data.get("endpoint", [])
    if not isinstance(raw, list):
        raise PolicyError(f"'endpoint' must be an array of tables, found {type(raw).__name__}")
    listed: list[Target] = []
    for index, item in enumerate(raw):
        where = f"endpoint #{index + 1}"
        if not isinstance(item, Mapping):
            raise PolicyError(f"{where}: expected a table, found {type(item).__name__}")
        extra = sorted(set(item) - set(_ENDPOINT_KEYS))
        if extra:
            raise PolicyError(f"{where}: unknown key(s) {extra}; expected {list(_ENDPOINT_KEYS)}")
        if not isinstance(item.get("host"), str):
            raise PolicyError(f"{where}: 'host' must be a host name, found {item.get('host')!r}")
        try:
            host = canonical_host(item["host"])
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}") from None
        if not policy.rules_for(host):
            raise PolicyError(
                f"{where}: host {host!r} is not covered by any rule of the policy; "
                "the monitor checks pinned hosts only"
            )
        port = _port(item.get("port", 443), where)
        ips = item.get("ips", [])
        if not isinstance(ips, list):
            raise PolicyError(f"{where}: 'ips' must be a list of addresses, found {ips!r}")
        if ips:
            listed.extend(Target(host, port, _ip(ip, where)) for ip in ips)
        else:
            listed.append(Target(host, port))
    named = {t.host for t in listed}
    defaults = [t for t in policy_targets(policy) if t.host not in named] if include_policy else []
    return _unique([*defaults, *listed])


def load_targets(policy: PinPolicy, endpoints_file: str | Path | None = None) -> list[Target]:
    """Return every target to probe for *policy*, with the endpoints file applied when given.

    Raises:
        PolicyError: the file cannot be read or is malformed.
    """
    if endpoints_file is None:
        return policy_targets(policy)
    path = Path(endpoints_file)
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise PolicyError(f"{path}: endpoints file is larger than {_MAX_FILE_BYTES} bytes")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read endpoints file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: endpoints file is not UTF-8 text") from None
    try:
        return targets_from_data(tomllib.loads(text), policy)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: invalid TOML: {exc}") from None
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def _unique(targets: Iterable[Target]) -> list[Target]:
    return list(dict.fromkeys(targets))
