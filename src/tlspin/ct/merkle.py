"""RFC 6962 §2.1 Merkle tree hashing, kept as a compact frontier so a scan can resume.

A tree of *n* leaves is the left-to-right sequence of perfect subtrees given by the binary digits
of *n* (the RFC splits at the largest power of two below *n*, which yields exactly that
decomposition). The frontier keeps one hash per subtree, so appending a leaf is amortised O(1)
and the root of all leaves read so far is a right-to-left fold, with O(log n) state to persist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Frontier", "leaf_hash", "merkle_root", "node_hash"]


def leaf_hash(leaf_input: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``: the hash of one MerkleTreeLeaf."""
    return hashlib.sha256(b"\x00" + leaf_input).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(slots=True)
class Frontier:
    """The perfect subtrees covering the first :attr:`size` leaves, largest first.

    Attributes:
        size: number of leaves appended.
        nodes: ``(height, hash)`` of each perfect subtree, heights strictly decreasing.
    """

    size: int = 0
    nodes: list[tuple[int, bytes]] | None = None

    def __post_init__(self) -> None:
        if self.nodes is None:
            self.nodes = []
        heights = [h for h, _ in self.nodes]
        expected = [i for i in range(self.size.bit_length() - 1, -1, -1) if self.size >> i & 1]
        if heights != expected or any(len(digest) != 32 for _, digest in self.nodes):
            msg = f"a Merkle frontier of {self.size} leaves needs subtrees of heights {expected}"
            raise ValueError(msg)

    def append(self, leaf_input: bytes) -> None:
        """Add one leaf (the raw MerkleTreeLeaf bytes)."""
        self.append_hash(leaf_hash(leaf_input))

    def append_hash(self, digest: bytes) -> None:
        """Add one leaf given its leaf hash."""
        nodes = self.nodes
        assert nodes is not None
        height = 0
        while nodes and nodes[-1][0] == height:
            _, left = nodes.pop()
            digest = node_hash(left, digest)
            height += 1
        nodes.append((height, digest))
        self.size += 1

    def root(self) -> bytes:
        """The RFC 6962 Merkle tree hash of every leaf appended so far."""
        nodes = self.nodes
        assert nodes is not None
        if not nodes:
            return hashlib.sha256(b"").digest()
        acc = nodes[-1][1]
        for _, digest in reversed(nodes[:-1]):
            acc = node_hash(digest, acc)
        return acc

    def to_data(self) -> dict[str, object]:
        """JSON-ready form."""
        assert self.nodes is not None
        return {"size": self.size, "nodes": [[h, d.hex()] for h, d in self.nodes]}

    @classmethod
    def from_data(cls, data: object) -> Frontier:
        """Rebuild from :meth:`to_data` output.

        Raises:
            ValueError: the data is not a valid frontier.
        """
        if not isinstance(data, dict) or not isinstance(data.get("size"), int):
            raise ValueError(f"expected a Merkle frontier object, found {data!r:.80}")  # noqa: TRY004
        raw = data.get("nodes")
        if not isinstance(raw, list):
            msg = "expected a list of Merkle frontier nodes"
            raise ValueError(msg)  # noqa: TRY004 - damaged state is bad input, not a type bug
        nodes: list[tuple[int, bytes]] = []
        for item in raw:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                    and isinstance(item[1], str)):
                raise ValueError(f"expected a [height, hex] frontier node, found {item!r:.80}")
            nodes.append((item[0], bytes.fromhex(item[1])))
        return cls(data["size"], nodes)


def merkle_root(leaves: Sequence[bytes] | Iterable[bytes]) -> bytes:
    """The Merkle tree hash of raw leaves (convenience over :class:`Frontier`)."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()
