"""What cryptofeed 3.0.1 offers: the exchange ids and the channels each one serves.

This is the single place that asks cryptofeed, so the API model, the CRD enums and the
collector agree on what is valid.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from svoe.api.channels import MARKET_CHANNELS

# The channels a DataFeed may list (svoe/api/channels.py). cryptofeed offers a few more (l1_book,
# index, ...); they are accepted only once the registry, and so the lake, has them.
STORED_CHANNELS: tuple[str, ...] = MARKET_CHANNELS


@cache
def exchange_channels() -> dict[str, tuple[str, ...]]:
    """Exchange id -> the stored channels its websocket feed supports, from cryptofeed's map."""
    from cryptofeed.exchanges import EXCHANGE_MAP

    out: dict[str, tuple[str, ...]] = {}
    feed_cls: Any
    for exchange_id, feed_cls in EXCHANGE_MAP.items():
        ws = feed_cls.websocket_channels
        offered = set(ws.keys()) if ws is not NotImplemented else set()
        out[str(exchange_id)] = tuple(c for c in STORED_CHANNELS if c in offered)
    return dict(sorted(out.items()))


def known_exchanges() -> list[str]:
    return list(exchange_channels())
