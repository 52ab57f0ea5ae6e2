"""The feed pod: collector -> Redis stream buffer -> aggregator -> lake, plus live stream, metrics, health."""
