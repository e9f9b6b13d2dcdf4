"""Certificate Transparency checks: find certificates for pinned names whose keys are not pinned.

``tlspin ct check POLICY --log URL`` reads an RFC 6962 log with :class:`LogClient`, parses each
entry (:func:`parse_entry`, X.509 and precertificate entries alike), and flags every certificate
whose names fall under a pinned rule while neither its key nor its issuer's key is one of the
rule's pins (:func:`check_record`). :class:`CTState` remembers the position per log, and the
Merkle root of everything read is checked against the signed tree head.
"""

from __future__ import annotations

from tlspin.ct.client import CTError, CTVerificationError, LogClient, SignedTreeHead
from tlspin.ct.entries import CertRecord, CTEntryError, parse_entry, record_from_certificate
from tlspin.ct.export import read_export, record_from_export
from tlspin.ct.matching import Finding, check_record, name_covered, rules_for_name
from tlspin.ct.merkle import Frontier, leaf_hash, merkle_root
from tlspin.ct.scan import CTState, ScanReport, check_records, scan_log

__all__ = [
    "CTEntryError",
    "CTError",
    "CTState",
    "CTVerificationError",
    "CertRecord",
    "Finding",
    "Frontier",
    "LogClient",
    "ScanReport",
    "SignedTreeHead",
    "check_record",
    "check_records",
    "leaf_hash",
    "merkle_root",
    "name_covered",
    "parse_entry",
    "read_export",
    "record_from_certificate",
    "record_from_export",
    "rules_for_name",
    "scan_log",
]
