"""What the alert caps held back, remembered within bounds and listed fairly.

:class:`~tlspin.collector.alerts.AlertSender` puts every alert a cap holds back into a
:class:`HeldBack` and sends its :meth:`HeldBack.digest` as an ``alerts.suppressed`` alert. The
listing goes round-robin over the senders (an alert with no sender, such as the monitor's or a
host-rate alert, counts as a sender of its own), each sender's hosts in the order first held
back: an attacker who floods the caps with decoys from a few addresses gets a few places per
round, and a real report from any other address is named in the first round.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

__all__ = ["TEXT_LIMIT", "Digest", "HeldBack"]

_HOST_CHARS = 256  # a host name has at most 253; cut anything longer before remembering it
_TEXT_HOST_CHARS = 100  # per host in the text, so that 50 of them fit in TEXT_LIMIT
TEXT_LIMIT = 6000


@dataclass(slots=True)
class _Entry:
    kind: str
    key: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class Digest:
    """One digest of held-back alerts.

    Attributes:
        payload: the JSON details (counts, and the held-back alerts listed fairly).
        text: the one-line summary (plain text: the sender passes it through ``chat_text``).
        hosts: the hosts named in *text*, for the log line.
    """

    payload: dict[str, Any]
    text: str
    hosts: tuple[str, ...]


class HeldBack:
    """The alerts held back since the last digest, grouped by sender.

    Memory is bounded: at most *max_entries* (sender, host) pairs in all and *max_per_sender*
    per sender are remembered; alerts beyond that are counted, not itemised. The cap per sender
    keeps a few flooding senders from using up the room before another sender's alert comes.

    Args:
        max_entries: most (sender, host) pairs remembered per digest.
        max_per_sender: most hosts remembered per sender per digest.
    """

    def __init__(self, *, max_entries: int = 5000, max_per_sender: int = 100) -> None:
        self._max_entries = max_entries
        self._max_per_sender = max_per_sender
        self._senders: dict[str | None, dict[str, _Entry]] = {}
        self._entries = 0
        self._count = 0
        self._unremembered = 0

    def __len__(self) -> int:
        """How many alerts were held back since the last digest."""
        return self._count

    def add(self, *, sender: str | None, host: str, kind: str, key: str) -> None:
        """Remember one held-back alert about *host* from *sender* (None: no sender)."""
        self._count += 1
        if len(host) > _HOST_CHARS:
            host = host[:_HOST_CHARS] + "…"
        hosts = self._senders.get(sender)
        entry = hosts.get(host) if hosts is not None else None
        if entry is not None:
            entry.count += 1
            return
        if self._entries >= self._max_entries or (
            hosts is not None and len(hosts) >= self._max_per_sender
        ):
            self._unremembered += 1
            return
        if hosts is None:
            hosts = self._senders[sender] = {}
        hosts[host] = _Entry(kind, key)
        self._entries += 1

    def digest(self, *, text_hosts: int = 50, payload_alerts: int = 500) -> Digest:
        """The digest of what is held back, and forget it.

        Args:
            text_hosts: most hosts named in the text (the rest are counted).
            payload_alerts: most held-back alerts itemised in the payload.
        """
        # Round-robin: the first host of each sender, then the second of each, and so on.
        columns = itertools.zip_longest(
            *[[(sender, host, entry) for host, entry in hosts.items()]
              for sender, hosts in self._senders.items()]
        )
        fair = [item for column in columns for item in column if item is not None]
        hosts = list(dict.fromkeys(host for _sender, host, _entry in fair))
        named = hosts[:text_hosts]
        shown = (h if len(h) <= _TEXT_HOST_CHARS else h[:_TEXT_HOST_CHARS] + "…" for h in named)
        text = (
            f"tlspin: {self._count} alert(s) suppressed by the rate caps (a flood of reports, "
            f"possibly decoys), for {', '.join(shown)}"
        )
        if len(hosts) > len(named):
            text += f" and {len(hosts) - len(named)} more hosts"
        if self._unremembered:
            text += f"; {self._unremembered} more alert(s) not itemised"
        text += ". Check the dashboard; the count is in tlspin_alerts_suppressed."
        payload = {
            "suppressed": self._count,
            "hosts": len(hosts),
            "senders": len(self._senders),
            "not_itemised": self._unremembered,
            "held_back": [
                {"host": host, "sender": sender, "kind": entry.kind, "key": entry.key,
                 "count": entry.count}
                for sender, host, entry in fair[:payload_alerts]
            ],
        }
        self._senders, self._entries, self._count, self._unremembered = {}, 0, 0, 0
        return Digest(payload=payload, text=text, hosts=tuple(named))
