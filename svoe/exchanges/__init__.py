"""cryptofeed's exchange classes, adapted at run time: below the feed pod, the replay and the benchmarks.

`svoe.exchanges.endpoints` imports cryptofeed and aiohttp, so this package exports nothing itself:
importing `svoe.exchanges` costs nothing. What is valid in a manifest (exchange ids, their channels)
is answered by `svoe.api.exchanges`, which the API models and the CRD use without building feeds.
"""
