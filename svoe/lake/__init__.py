"""Reading the lake back: the exactly-once view, SQL, books and counts.

`from svoe.lake import Lake, LakeError`. The layout itself (svoe/lake/layout.py) is shared with
the feed pod's writers and imports nothing heavy; the reader is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from svoe.lake.reader import Lake
    from svoe.lake.scan import LakeError

__all__ = ["Lake", "LakeError"]


def __getattr__(name: str) -> Any:
    if name == "Lake":
        from svoe.lake.reader import Lake

        return Lake
    if name == "LakeError":
        from svoe.lake.scan import LakeError

        return LakeError
    raise AttributeError(name)
