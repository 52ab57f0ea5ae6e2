"""Faults the replay exchange can inject, so that gap detection is tested against real failures:
messages of one stream that never arrive, and a connection the exchange closes.

    --drop MATCH:N[@SKIP]   drop N messages whose text contains MATCH, after SKIP such messages
                            (default: from the middle of them)
    --close-after N         close the connection that sends the N-th message (once)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DROP = re.compile(r"^(?P<match>[^:]+):(?P<count>\d+)(?:@(?P<skip>\d+))?$")


@dataclass
class Faults:
    drop_match: str | None = None
    drop_count: int = 0
    drop_skip: int | None = None  # None: start at the middle of the matching messages
    close_after: int | None = None
    dropped: int = 0
    closed: bool = False
    _seen: int = field(default=0, repr=False)

    @classmethod
    def parse(cls, drop: str | None, close_after: int | None) -> Faults:
        faults = cls(close_after=close_after)
        if close_after is not None and close_after < 1:
            raise ValueError(f"--close-after {close_after}: give the number of messages to send first, at least 1")
        if drop:
            m = _DROP.match(drop)
            if m is None or int(m["count"]) < 1:
                raise ValueError(f"--drop {drop!r}: use MATCH:N or MATCH:N@SKIP, e.g. akrousdt@depth:3")
            faults.drop_match, faults.drop_count = m["match"], int(m["count"])
            faults.drop_skip = None if m["skip"] is None else int(m["skip"])
        return faults

    def resolve(self, texts: list[str]) -> None:
        """Fix where dropping starts, now that the capture is known: its middle by default."""
        if self.drop_match is not None and self.drop_skip is None:
            matching = sum(1 for t in texts if self.drop_match in t)
            self.drop_skip = max(0, (matching - self.drop_count) // 2)

    def drops(self, text: str) -> bool:
        """Whether this message is one of those dropped (called once per message, in send order)."""
        if self.drop_match is None or self.drop_match not in text:
            return False
        self._seen += 1
        skip = self.drop_skip or 0
        if skip < self._seen <= skip + self.drop_count:
            self.dropped += 1
            return True
        return False

    def closes(self, sent: int) -> bool:
        """Whether the connection that just sent message number `sent` (server-wide) closes now."""
        if self.close_after is not None and not self.closed and sent >= self.close_after:
            self.closed = True
            return True
        return False
