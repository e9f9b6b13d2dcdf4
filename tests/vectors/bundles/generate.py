"""Write the bundle conformance vectors into this directory (or the one given).

    .venv/bin/python tests/vectors/bundles/generate.py [OUTDIR]

The output is the same byte for byte on every run (fixed keys, fixed times, deterministic
Ed25519), and tests/bundles/test_bundle_vectors.py checks that the committed files are exactly
what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bundles.vectors import build

if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
