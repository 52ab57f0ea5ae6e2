"""svoe: crypto market data collection."""
