"""Features from books and trades at a fixed interval, computed by one implementation live (from
the feed's ZMQ streams) and offline (from the lake), so that both give the same rows bit for bit.

    ticks.py    the one rule: which events count for a tick, and in what order
    kinds.py    one compute function per feature kind (svoe.api.featureset.FEATURE_KINDS)
    engine.py   a symbol's features tick by tick, from its book and its trades
    book.py     the live order book, applied as the lake's books are
    output.py   the output columns and the Parquet file
    offline.py  the lake -> rows
    live.py     ZMQ streams -> rows -> ZMQ PUB (and a Parquet file)
    cli.py      `svoe features live|offline`
"""
