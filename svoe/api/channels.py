"""The channel registry: every channel svoe stores, in one table, as plain data.

The API enum, the CRD, the collector's callbacks and encoders (svoe/feedpod/events.py) and the lake
schemas (svoe/lake/schema.py) are derived from or checked against CHANNELS, so a channel is
added here first and everything that does not know it yet fails at import. Pure data only: the API
package must stay importable without pyarrow or cryptofeed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

BookKind = Literal["l2", "l3"]
# The positional parts of each level in a book entry's `bids`/`asks` (the buffer wire format): an
# l3 book keeps every order, so its levels carry the order id.
BOOK_LEVELS: dict[BookKind, tuple[str, ...]] = {"l2": ("price", "size"), "l3": ("order_id", "price", "size")}
BOOK_SIDES = {"bids": "bid", "asks": "ask"}


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    # Positional fields of the buffer entry (events.py), after which the lake columns are named.
    fields: tuple[str, ...]
    book: BookKind | None = None
    # A cryptofeed channel that a DataFeed lists. False for the collector's own feed_events: stored
    # like market data, but never asked of an exchange, and no market data for gaps and stats.
    market_data: bool = True

    @property
    def is_book(self) -> bool:
        return self.book is not None

    @property
    def l3(self) -> bool:
        return self.book == "l3"

    def level(self) -> tuple[str, ...]:
        return BOOK_LEVELS[self.book] if self.book else ()

    def is_side(self, field: str) -> bool:
        return self.is_book and field in BOOK_SIDES

    def columns(self) -> tuple[str, ...]:
        """The lake columns the fields become (svoe's own columns aside): a book side is one list
        column per level part, parallel arrays such as bid_price[i], bid_size[i]."""
        out: list[str] = []
        for f in self.fields:
            out.extend([level_column(f, part) for part in self.level()] if self.is_side(f) else [f])
        return tuple(out)


def level_column(side: str, part: str) -> str:
    return f"{BOOK_SIDES[side]}_{part}"


_TIMES = ("timestamp", "receipt_timestamp")
_BOOK_FIELDS = (*_TIMES, "sequence_number", "snapshot", "bids", "asks")
FEED_EVENTS = "feed_events"
# The feed's own events go through the buffer like market data, in one stream per feed whose
# `symbol` is this placeholder (the affected symbol, if any, is a column of the event).
FEED_SYMBOL = "_feed"

# The order is the API's: the CRD enum and the per-exchange channel lists follow it.
CHANNELS: dict[str, ChannelSpec] = {
    c.name: c
    for c in (
        ChannelSpec("trades", (*_TIMES, "side", "amount", "price", "id", "type")),
        ChannelSpec("l2_book", _BOOK_FIELDS, book="l2"),
        ChannelSpec("l3_book", _BOOK_FIELDS, book="l3"),
        ChannelSpec("ticker", (*_TIMES, "bid", "ask")),
        ChannelSpec(
            "candles",
            (*_TIMES, "start", "stop", "interval", "trades", "open", "close", "high", "low", "volume", "closed"),
        ),
        ChannelSpec("funding", (*_TIMES, "mark_price", "rate", "next_funding_time", "predicted_rate")),
        ChannelSpec("open_interest", (*_TIMES, "open_interest")),
        ChannelSpec("liquidations", (*_TIMES, "side", "quantity", "price", "id", "status")),
        # What happened to the feed itself (docs/lake-schema.md, "Feed events"); events.py encodes it.
        ChannelSpec(FEED_EVENTS, (*_TIMES, "kind", "event_channel", "event_symbol", "detail"), market_data=False),
    )
}
MARKET_CHANNELS: tuple[str, ...] = tuple(n for n, c in CHANNELS.items() if c.market_data)
BOOK_CHANNELS: tuple[str, ...] = tuple(n for n, c in CHANNELS.items() if c.is_book)
# Market data that is not a book: one encoder per channel, each a cryptofeed object's fields.
SIMPLE_CHANNELS: tuple[str, ...] = tuple(n for n in MARKET_CHANNELS if not CHANNELS[n].is_book)

# A Literal so that pydantic, and through it the CRD, enumerate the channels; mypy needs it spelled
# out, so it is checked against the registry instead of built from it.
Channel = Literal["trades", "l2_book", "l3_book", "ticker", "candles", "funding", "open_interest", "liquidations"]


def keyed[T](table: Mapping[str, T], names: Iterable[str], what: str) -> dict[str, T]:
    """`table` in registry order, once it has exactly the channels `names`: a table kept elsewhere
    (the encoders) then cannot miss a channel or keep one the registry dropped."""
    want = tuple(names)
    missing, extra = [n for n in want if n not in table], sorted(set(table) - set(want))
    if missing or extra:
        raise RuntimeError(f"{what} disagrees with svoe/api/channels.py: missing {missing}, not channels {extra}")
    return {n: table[n] for n in want}


if get_args(Channel) != MARKET_CHANNELS:
    raise RuntimeError(f"the Channel Literal must list {MARKET_CHANNELS}, in this order")
